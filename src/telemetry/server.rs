//! The HTTP endpoint: `/metrics` (Prometheus text), `/healthz` and `/readyz`. The only part of
//! telemetry that does I/O.
//!
//! It lives beside scrapers, load balancers, probes and port scanners, so no neighbour may hold
//! it up: every connection is served by its own task (a `/healthz` probe never waits behind a
//! slow `/metrics` reader), HTTP/1.1 with keep-alive, at most [`MAX_CONNECTIONS`] at once (past
//! that a new connection is closed at once, and counted), a request head must arrive within
//! [`HEADER_TIMEOUT`] (a client trickling bytes is cut off), and a connection lives at most
//! [`CONNECTION_LIFETIME`], idle or stuck writing to a client that does not read.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

use super::Health;

/// Connections served at once; a connection past this is closed as soon as it is accepted.
pub const MAX_CONNECTIONS: usize = 256;
/// A request's head (request line and headers) must arrive within this.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a connection is kept, however it is used (idle keep-alive included).
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// Errors of the telemetry endpoint.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// The running endpoint; stops when dropped.
#[derive(Debug)]
pub struct Server {
    /// The bound address.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listen`.
pub async fn serve(
    listen: &str,
    handle: &'static super::exposition::Registry,
    health: Health,
) -> Result<Server, TelemetryError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| TelemetryError::Bind {
            addr: listen.to_string(),
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| TelemetryError::Bind {
            addr: listen.to_string(),
            source,
        })?;
    let state = Arc::new(State { handle, health });
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let (sock, _) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    // Out of file descriptors and the like: wait a little, never spin.
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                // Reap finished connections so the set holds only live ones.
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            };
            let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                super::telemetry_connection_refused();
                drop(sock);
                continue;
            };
            let state = Arc::clone(&state);
            connections.spawn(async move {
                let _permit = permit;
                let _ = sock.set_nodelay(true);
                let service = hyper::service::service_fn(move |req| {
                    let state = Arc::clone(&state);
                    async move { Ok::<_, Infallible>(answer(&state, &req)) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .keep_alive(true)
                    .max_buf_size(16 << 10)
                    .serve_connection(hyper_util::rt::TokioIo::new(sock), service);
                // Past its lifetime the connection is dropped, whatever it was doing.
                let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
            });
        }
    });
    Ok(Server { addr, task })
}

struct State {
    handle: &'static super::exposition::Registry,
    health: Health,
}

/// The answer to one request (any method; only the path matters).
fn answer(state: &State, req: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match req.uri().path() {
        "/metrics" => {
            super::scraped(&state.health);
            let format = super::exposition::Format::negotiate(
                req.headers()
                    .get(hyper::header::ACCEPT)
                    .and_then(|v| v.to_str().ok()),
            );
            let mut body = String::with_capacity(64 << 10);
            let mut w = super::exposition::Writer::new(&mut body, format);
            state.handle.write(&mut w);
            super::span_metrics::write_installed(&mut w);
            w.finish();
            (StatusCode::OK, format.content_type(), body)
        }
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        "/readyz" if state.health.is_ready() => {
            (StatusCode::OK, "text/plain", "ready\n".to_string())
        }
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            match state.health.fault() {
                Some(why) => format!("not ready: {why}\n"),
                None => "not ready\n".to_string(),
            },
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    resp
}

/// Fetches a path from the endpoint (for tests and `demo`).
pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::{install, register_run, run::RunStats, SPANS_IN};

    #[tokio::test]
    async fn endpoints_answer() {
        let handle = install();
        let health = Health::default();
        let server = serve("127.0.0.1:0", handle, health.clone()).await.unwrap();
        // A run's own count shows in /metrics at the next scrape.
        let run = std::sync::Arc::new(RunStats::new());
        register_run(&run);
        let spans = |body: &str| -> u64 {
            body.lines()
                .find(|l| l.starts_with(&format!("{SPANS_IN} ")))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
                .unwrap_or_else(|| panic!("no {SPANS_IN} in {body}"))
        };
        let (code, body) = http_get(server.addr, "/metrics").await.unwrap();
        assert_eq!(code, 200);
        let before = spans(&body);
        run.record_read(true, 3, 100);
        let (_, body) = http_get(server.addr, "/metrics").await.unwrap();
        assert_eq!(spans(&body), before + 3, "{body}");
        assert_eq!(http_get(server.addr, "/healthz").await.unwrap().0, 200);
        assert_eq!(http_get(server.addr, "/readyz").await.unwrap().0, 503);
        health.set_ready(true);
        assert_eq!(http_get(server.addr, "/readyz").await.unwrap().0, 200);
        assert_eq!(http_get(server.addr, "/nope").await.unwrap().0, 404);
        // A fault (an input batch that cannot be decompressed) holds readiness down and says
        // why, until it has not been seen for FAULT_HOLD_MS; liveness stays up.
        health.fault_seen(
            1_000,
            "an input record batch cannot be decompressed (codec_not_built)",
        );
        let (code, body) = http_get(server.addr, "/readyz").await.unwrap();
        assert_eq!(code, 503);
        assert!(body.contains("cannot be decompressed"), "{body}");
        assert_eq!(http_get(server.addr, "/healthz").await.unwrap().0, 200);
        health.expire_fault(1_000 + crate::telemetry::FAULT_HOLD_MS - 1);
        assert_eq!(http_get(server.addr, "/readyz").await.unwrap().0, 503);
        health.expire_fault(1_000 + crate::telemetry::FAULT_HOLD_MS);
        assert_eq!(http_get(server.addr, "/readyz").await.unwrap().0, 200);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_and_unread_connections_do_not_hold_up_probes() {
        let handle = install();
        let health = Health::default();
        health.set_ready(true);
        let server = serve("127.0.0.1:0", handle, health).await.unwrap();
        let mut idle = Vec::new();
        for _ in 0..50 {
            idle.push(tokio::net::TcpStream::connect(server.addr).await.unwrap());
        }
        for _ in 0..10 {
            let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            idle.push(s);
        }
        for _ in 0..20 {
            for path in ["/healthz", "/readyz"] {
                let (code, _) = tokio::time::timeout(
                    std::time::Duration::from_secs(1),
                    http_get(server.addr, path),
                )
                .await
                .expect("a probe must answer within 1 s")
                .unwrap();
                assert_eq!(code, 200, "{path}");
            }
        }
        drop(idle);
    }
}
