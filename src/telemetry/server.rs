//! The HTTP endpoint: `/metrics` (Prometheus text), `/healthz` and `/readyz`. The only part of
//! telemetry that does I/O.

use std::net::SocketAddr;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Health;

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
    handle: PrometheusHandle,
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
    let task = tokio::spawn(async move {
        // Connections are answered one at a time: scrapes are rare and small, and this bounds
        // the endpoint's resources.
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = [0u8; 2048];
            let mut n = 0;
            let read = tokio::time::timeout(std::time::Duration::from_secs(2), async {
                while n < buf.len() {
                    match sock.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(k) => {
                            n += k;
                            if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                                break;
                            }
                        }
                    }
                }
            })
            .await;
            if read.is_err() {
                continue;
            }
            let req = String::from_utf8_lossy(&buf[..n]);
            let path = req.split_whitespace().nth(1).unwrap_or("/");
            let (status, body) = match path {
                "/metrics" => {
                    super::scraped(&health);
                    ("200 OK", handle.render())
                }
                "/healthz" => ("200 OK", "ok\n".to_string()),
                "/readyz" if health.is_ready() => ("200 OK", "ready\n".to_string()),
                "/readyz" => match health.fault() {
                    Some(why) => ("503 Service Unavailable", format!("not ready: {why}\n")),
                    None => ("503 Service Unavailable", "not ready\n".to_string()),
                },
                _ => ("404 Not Found", "not found\n".to_string()),
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
            let _ = sock.shutdown().await;
        }
    });
    Ok(Server { addr, task })
}

/// Fetches a path from the endpoint (for tests and `demo`).
pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
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
    use crate::telemetry::{install, record_in, SPANS_IN};

    #[tokio::test]
    async fn endpoints_answer() {
        let handle = install();
        let health = Health::default();
        let server = serve("127.0.0.1:0", handle, health.clone()).await.unwrap();
        record_in(true, 3, 100);
        let (code, body) = http_get(server.addr, "/metrics").await.unwrap();
        assert_eq!(code, 200);
        assert!(body.contains(SPANS_IN), "{body}");
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
}
