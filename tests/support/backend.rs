//! OTLP backends that misbehave, for the exporters' tests. No real tracing backend installs
//! here, so these are built on the protocols' own definitions: HTTP/1.1 (hyper) and HTTP/2
//! (h2) servers answering OTLP/HTTP and gRPC as a redirecting ingress, a streaming or HTML-
//! answering proxy, a backend reporting partial success (an `ExportTraceServiceResponse` from
//! the official OpenTelemetry proto types), or a gRPC server answering with a gzip bomb.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use prost::Message;

/// How an OTLP/HTTP backend answers every request.
#[derive(Debug, Clone)]
pub enum Answer {
    /// `status` (a 3xx) with `Location: location`.
    Redirect(u16, String),
    /// 200 with a chunked body that never ends.
    Endless,
    /// 200 with an HTML page (a login page of a proxy in front of the backend).
    Html,
    /// 200 with an `ExportTraceServiceResponse` rejecting this many spans, for this reason.
    Partial(i64, String),
    /// 200 with an empty `ExportTraceServiceResponse`: everything taken.
    Accept,
}

/// A running backend: its port and how many requests it has seen.
pub struct Backend {
    pub port: u16,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    /// Requests seen so far (any method, any path).
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Acquire)
    }

    /// An OTLP/HTTP backend answering every request with `answer`.
    pub async fn http(answer: Answer) -> Backend {
        listen(move |sock, seen| {
            let answer = answer.clone();
            async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let answer = answer.clone();
                        let seen = Arc::clone(&seen);
                        async move {
                            seen.fetch_add(1, Ordering::AcqRel);
                            // Take the request as a backend would before answering.
                            let _ = req.into_body().collect().await;
                            Ok::<_, Infallible>(respond(&answer))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(sock), service)
                    .await;
            }
        })
        .await
    }

    /// A gRPC backend that answers every Export with status OK and a response message whose
    /// gzip frame inflates to `inflated` bytes (a gzip bomb), built by Python's zlib.
    pub async fn grpc_gzip_bomb(inflated: u64) -> Backend {
        let bomb = gzip_of_zeros(inflated);
        let mut frame = Vec::with_capacity(bomb.len() + 5);
        frame.push(1u8);
        frame.extend_from_slice(&(bomb.len() as u32).to_be_bytes());
        frame.extend_from_slice(&bomb);
        let frame = Bytes::from(frame);
        listen(move |sock, seen| {
            let frame = frame.clone();
            async move {
                let Ok(mut conn) = h2::server::handshake(sock).await else {
                    return;
                };
                let mut streams = tokio::task::JoinSet::new();
                while let Some(Ok((req, respond))) = conn.accept().await {
                    seen.fetch_add(1, Ordering::AcqRel);
                    streams.spawn(answer_bomb(req, respond, frame.clone()));
                }
            }
        })
        .await
    }
}

/// A backend on a fresh loopback port: every connection served by `serve` (with the counter
/// of requests it should count), on tasks the backend owns.
async fn listen<F, Fut>(serve: F) -> Backend
where
    F: Fn(tokio::net::TcpStream, Arc<AtomicUsize>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&requests);
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((sock, _)) = listener.accept().await {
            conns.spawn(serve(sock, Arc::clone(&seen)));
        }
    });
    Backend {
        port,
        requests,
        task,
    }
}

fn respond(
    answer: &Answer,
) -> hyper::Response<http_body_util::combinators::BoxBody<Bytes, Infallible>> {
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTracePartialSuccess, ExportTraceServiceResponse,
    };
    let builder = hyper::Response::builder();
    match answer {
        Answer::Redirect(status, location) => builder
            .status(*status)
            .header("location", location)
            .body(Full::new(Bytes::from_static(b"moved")).boxed())
            .unwrap(),
        Answer::Endless => {
            let chunk = Bytes::from(vec![b'x'; 64 << 10]);
            let body = StreamBody::new(futures::stream::repeat_with(move || {
                Ok::<_, Infallible>(Frame::data(chunk.clone()))
            }));
            builder
                .status(200)
                .header("content-type", "application/x-protobuf")
                .body(body.boxed())
                .unwrap()
        }
        Answer::Html => builder
            .status(200)
            .header("content-type", "text/html; charset=utf-8")
            .body(
                Full::new(Bytes::from_static(
                    b"<!doctype html><html><body><form action=/login>Please sign in</form></body></html>",
                ))
                .boxed(),
            )
            .unwrap(),
        Answer::Partial(rejected, why) => {
            let body = ExportTraceServiceResponse {
                partial_success: Some(ExportTracePartialSuccess {
                    rejected_spans: *rejected,
                    error_message: why.clone(),
                }),
            }
            .encode_to_vec();
            builder
                .status(200)
                .header("content-type", "application/x-protobuf")
                .body(Full::new(Bytes::from(body)).boxed())
                .unwrap()
        }
        Answer::Accept => builder
            .status(200)
            .header("content-type", "application/x-protobuf")
            .body(Full::new(Bytes::new()).boxed())
            .unwrap(),
    }
}

async fn answer_bomb(
    req: hyper::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    frame: Bytes,
) {
    let mut body = req.into_body();
    while let Some(Ok(d)) = body.data().await {
        let _ = body.flow_control().release_capacity(d.len());
    }
    let resp = hyper::Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .header("grpc-encoding", "gzip")
        .body(())
        .unwrap();
    let Ok(mut send) = respond.send_response(resp, false) else {
        return;
    };
    let mut data = frame;
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        match futures::future::poll_fn(|cx| send.poll_capacity(cx)).await {
            Some(Ok(n)) if n > 0 => {
                let chunk = data.split_to(n.min(data.len()));
                if send.send_data(chunk, false).is_err() {
                    return;
                }
            }
            Some(Ok(_)) => continue,
            // The client reset the stream (it stopped reading): done.
            _ => return,
        }
    }
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let _ = send.send_trailers(trailers);
}

/// A gzip member holding `n` zero bytes, made by CPython's zlib (fast at any size).
fn gzip_of_zeros(n: u64) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bomb.gz");
    super::run_python(&format!(
        "import zlib\nc = zlib.compressobj(9, zlib.DEFLATED, 31)\nchunk = bytes(1 << 20)\nn = {n}\nparts = []\nwhile n > 0:\n    k = min(n, len(chunk))\n    parts.append(c.compress(chunk[:k]))\n    n -= k\nparts.append(c.flush())\nopen('{}', 'wb').write(b''.join(parts))\nprint('ok')\n",
        out.display()
    ));
    std::fs::read(&out).unwrap()
}
