//! One OTLP export request over HTTP/1.1 or HTTP/2 (OTLP/HTTP protobuf) or gRPC, and what its
//! answer means: delivered (perhaps partly rejected), refused for good, or worth retrying (with
//! the server's requested delay).
//!
//! gRPC is spoken directly on reqwest's HTTP/2 client: one unary call is a POST to
//! `/opentelemetry.proto.collector.trace.v1.TraceService/Export` with a length-prefixed message,
//! and its status comes in the response headers (trailers-only) or trailers. That is the whole
//! of what the exporter needs from gRPC, without a second HTTP stack in the binary.
//!
//! Nothing the backend sends is trusted: redirects are not followed (a 3xx is a permanent error
//! naming where it points, so credentials in headers never travel to another host and a POST
//! is never turned into an empty GET), at most [`MAX_ANSWER_BYTES`] of an answer are read or
//! inflated, and a 2xx counts as delivered only when its body is an `ExportTraceServiceResponse`
//! (or empty).

use std::io::Write as _;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::BodyExt as _;
use prost::Message as _;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::sink::config::{OtlpCompression, OtlpSinkConfig};

/// The gRPC method of a trace export.
const GRPC_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// The longest server-requested delay honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// The most of an answer read (and, for a gzip gRPC message, inflated): enough for any partial
/// success or error message. A longer answer is not read on; its connection is closed.
pub const MAX_ANSWER_BYTES: usize = 64 << 10;

/// What one export request came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Accepted; `rejected` spans were refused by the server (partial success), for `why`.
    Delivered {
        /// Spans the server says it rejected (not retried, as OTLP requires).
        rejected: u64,
        /// The server's message about them.
        why: String,
    },
    /// Refused for good (bad request, auth, not found, too large): retrying cannot help.
    Permanent(String),
    /// Failed for now (unavailable, throttled, timed out, connection refused).
    Transient {
        /// What happened.
        why: String,
        /// The backend answered that it is throttling (429, RESOURCE_EXHAUSTED): it is up, and
        /// says when to come back; not a failure for the circuit breaker.
        throttled: bool,
        /// The server's requested wait (`Retry-After`, gRPC RetryInfo).
        retry_after: Option<Duration>,
    },
}

/// A configured exporter's connection: client, URL, headers.
pub struct Transport {
    client: reqwest::Client,
    url: reqwest::Url,
    headers: HeaderMap,
    grpc: bool,
    gzip: bool,
    timeout: Duration,
}

impl Transport {
    /// The client for `cfg`; `grpc` selects the protocol. Errors name the problem, never a
    /// header value.
    pub fn new(cfg: &OtlpSinkConfig, grpc: bool) -> Result<Self, String> {
        let url = url_of(cfg, grpc)?;
        let mut headers = HeaderMap::new();
        for (k, v) in &cfg.headers {
            let name = HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes())
                .map_err(|_| format!("header `{k}`: not a valid name"))?;
            let mut value = HeaderValue::from_str(v)
                .map_err(|_| format!("header `{k}`: the value is not a valid header value"))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let mut b = reqwest::Client::builder()
            .user_agent(concat!("tracesift/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            .timeout(cfg.timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none());
        if grpc {
            b = b.http2_prior_knowledge();
        }
        if let Some(ca) = &cfg.tls.ca_file {
            let pem =
                std::fs::read(ca).map_err(|e| format!("tls.ca_file {}: {e}", ca.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("tls.ca_file {}: {e}", ca.display()))?;
            b = b.tls_certs_only(certs);
        }
        if let (Some(cert), Some(key)) = (&cfg.tls.cert_file, &cfg.tls.key_file) {
            let mut pem = std::fs::read(cert)
                .map_err(|e| format!("tls.cert_file {}: {e}", cert.display()))?;
            pem.push(b'\n');
            pem.extend(
                std::fs::read(key).map_err(|e| format!("tls.key_file {}: {e}", key.display()))?,
            );
            let id = reqwest::Identity::from_pem(&pem).map_err(|_| {
                "tls.cert_file / tls.key_file: not a PEM certificate and key".to_string()
            })?;
            b = b.identity(id);
        }
        if cfg.tls.insecure_skip_verify {
            b = b.tls_danger_accept_invalid_certs(true);
        }
        let client = b.build().map_err(|e| format!("client: {e}"))?;
        Ok(Transport {
            client,
            url,
            headers,
            grpc,
            gzip: cfg.compression == OtlpCompression::Gzip,
            timeout: cfg.timeout,
        })
    }

    /// Where requests go (for logs: scheme, host, port and path only).
    pub fn target(&self) -> String {
        let u = &self.url;
        format!(
            "{}://{}:{}{}",
            u.scheme(),
            u.host_str().unwrap_or(""),
            u.port_or_known_default().unwrap_or(0),
            u.path()
        )
    }

    /// The request body on the wire for one `ExportTraceServiceRequest` (encoded): compressed
    /// as configured and, for gRPC, length-prefixed. Built once per request; every attempt
    /// sends the same bytes.
    pub fn wire_body(&self, request: &[u8]) -> std::io::Result<Bytes> {
        let body = if self.gzip {
            gzip(request)?
        } else {
            request.to_vec()
        };
        if !self.grpc {
            return Ok(Bytes::from(body));
        }
        let mut framed = Vec::with_capacity(body.len() + 5);
        framed.push(u8::from(self.gzip));
        framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
        framed.extend_from_slice(&body);
        Ok(Bytes::from(framed))
    }

    /// Sends one request whose body is [`Transport::wire_body`]'s.
    pub async fn export(&self, body: Bytes) -> Outcome {
        if self.grpc {
            self.export_grpc(body).await
        } else {
            self.export_http(body).await
        }
    }

    async fn export_http(&self, body: Bytes) -> Outcome {
        let mut req = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .header("content-type", "application/x-protobuf");
        if self.gzip {
            req = req.header("content-encoding", "gzip");
        }
        let resp = match req.body(body).send().await {
            Ok(r) => r,
            Err(e) => return transport_error(e),
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if (300..400).contains(&status) {
            return redirected(status, resp.headers());
        }
        let bytes = match read_capped(resp).await {
            Ok(Some(b)) => b,
            Ok(None) => return oversized(status),
            Err(e) if (200..300).contains(&status) => {
                // The server took the request; its answer broke off. Counting it delivered
                // risks nothing worse than the retry would (a duplicate).
                tracing::debug!(error = %e.without_url(), "OTLP response body lost after a 2xx");
                Bytes::new()
            }
            Err(e) => return transport_error(e),
        };
        http_outcome(status, retry_after, &content_type, &bytes)
    }

    async fn export_grpc(&self, framed: Bytes) -> Outcome {
        let mut req = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .header("content-type", "application/grpc+proto")
            .header("te", "trailers")
            .header(
                "grpc-timeout",
                format!("{}m", self.timeout.as_millis().max(1)),
            )
            .header("grpc-accept-encoding", "gzip,identity");
        if self.gzip {
            req = req.header("grpc-encoding", "gzip");
        }
        let resp = match req.body(framed).send().await {
            Ok(r) => r,
            Err(e) => return transport_error(e),
        };
        let resp: http::Response<reqwest::Body> = resp.into();
        let (parts, body) = resp.into_parts();
        if parts.status.is_redirection() {
            return redirected(parts.status.as_u16(), &parts.headers);
        }
        if parts.status != http::StatusCode::OK {
            // Not a gRPC answer (a proxy's): map the HTTP status as the gRPC spec does.
            let code = match parts.status.as_u16() {
                400 => 13,
                401 => 16,
                403 => 7,
                404 => 12,
                429 | 502 | 503 | 504 => 14,
                _ => 2,
            };
            return grpc_outcome(code, &format!("HTTP {}", parts.status), None, &[]);
        }
        let collected = match http_body_util::Limited::new(body, MAX_ANSWER_BYTES)
            .collect()
            .await
        {
            Ok(c) => c,
            Err(e) if e.is::<http_body_util::LengthLimitError>() => return oversized(200),
            Err(e) => {
                return Outcome::Transient {
                    why: format!("response: {e}"),
                    throttled: false,
                    retry_after: None,
                }
            }
        };
        let trailers = collected.trailers().cloned().unwrap_or_default();
        let data = collected.to_bytes();
        // Trailers-only answers carry the status in the headers.
        let get = |name: &str| {
            trailers
                .get(name)
                .or_else(|| parts.headers.get(name))
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let Some(code) = get("grpc-status").and_then(|c| c.trim().parse::<u32>().ok()) else {
            return Outcome::Transient {
                why: "gRPC answer without grpc-status".into(),
                throttled: false,
                retry_after: None,
            };
        };
        let message = get("grpc-message")
            .map(|m| percent_decode(&m))
            .unwrap_or_default();
        let details = get("grpc-status-details-bin").and_then(|d| {
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(d.trim_end_matches('='))
                .ok()
        });
        let compressed = parts
            .headers
            .get("grpc-encoding")
            .is_some_and(|v| v.as_bytes() == b"gzip");
        if code != 0 {
            return grpc_outcome(code, &message, details.as_deref(), &[]);
        }
        match unframe(&data, compressed) {
            Ok(message_bytes) => grpc_outcome(code, &message, details.as_deref(), &message_bytes),
            Err(why) => Outcome::Permanent(format!("gRPC OK with {why}")),
        }
    }
}

/// The URL requests go to.
fn url_of(cfg: &OtlpSinkConfig, grpc: bool) -> Result<reqwest::Url, String> {
    let raw = if grpc {
        let base = if cfg.endpoint.contains("://") {
            cfg.endpoint.clone()
        } else if cfg.tls.insecure {
            format!("http://{}", cfg.endpoint)
        } else {
            format!("https://{}", cfg.endpoint)
        };
        format!("{}{GRPC_PATH}", base.trim_end_matches('/'))
    } else {
        match &cfg.traces_endpoint {
            Some(t) => t.clone(),
            None => format!("{}/v1/traces", cfg.endpoint.trim_end_matches('/')),
        }
    };
    let url = reqwest::Url::parse(&raw).map_err(|e| format!("endpoint: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("endpoint: the scheme must be http or https".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("endpoint: put credentials in `headers`, not in the URL".into());
    }
    Ok(url)
}

fn gzip(b: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(b.len() / 4 + 64),
        flate2::Compression::fast(),
    );
    enc.write_all(b)?;
    enc.finish()
}

/// A request that got no answer: transient (connection refused, reset, timed out). The URL is
/// left out of the message.
fn transport_error(e: reqwest::Error) -> Outcome {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut causes = String::new();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        causes.push_str(&format!(": {s}"));
        source = s.source();
    }
    Outcome::Transient {
        why: format!("{kind}: {}{causes}", e.without_url()),
        throttled: false,
        retry_after: None,
    }
}

/// Reads an answer's body up to [`MAX_ANSWER_BYTES`]; `None` when it is longer (it is not read
/// on: dropping the response closes its connection).
async fn read_capped(mut resp: reqwest::Response) -> Result<Option<Bytes>, reqwest::Error> {
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
    {
        return Ok(None);
    }
    let mut out = bytes::BytesMut::new();
    while let Some(chunk) = resp.chunk().await? {
        if out.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Ok(None);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Some(out.freeze()))
}

/// An answer longer than [`MAX_ANSWER_BYTES`]: not an OTLP response, whatever its status.
fn oversized(status: u16) -> Outcome {
    Outcome::Permanent(format!(
        "HTTP {status} with an answer longer than {} KiB, which no OTLP response is; not read on",
        MAX_ANSWER_BYTES >> 10
    ))
}

/// A 3xx: the endpoint is somewhere else. Not followed (a redirect would carry the headers,
/// credentials among them, to another host, and turn the POST into a GET on 301/302), so the
/// operator sets the endpoint to where it points.
fn redirected(status: u16, headers: &HeaderMap) -> Outcome {
    let to = headers
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(|l| {
            // Scheme, host, port and path: a query may hold a token.
            let l = l.split(['?', '#']).next().unwrap_or("");
            clip(l)
        })
        .unwrap_or_else(|| "nowhere (no Location)".into());
    Outcome::Permanent(format!(
        "HTTP {status}: the endpoint redirects to {to}; redirects are not followed, set the endpoint to the final address"
    ))
}

/// `Retry-After`: delay-seconds or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s).min(MAX_RETRY_AFTER));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let wait = at
        .signed_duration_since(chrono::Utc::now())
        .to_std()
        .unwrap_or(Duration::ZERO);
    Some(wait.min(MAX_RETRY_AFTER))
}

/// What an OTLP/HTTP status means (the OTLP specification's retry rules: 429, 502, 503, 504
/// are retried, honouring `Retry-After`; every other error status is final).
pub fn http_outcome(
    status: u16,
    retry_after: Option<Duration>,
    content_type: &str,
    body: &[u8],
) -> Outcome {
    match status {
        200..=299 => answer_message(content_type, body),
        429 | 502 | 503 | 504 => Outcome::Transient {
            why: format!("HTTP {status}{}", status_message(content_type, body)),
            throttled: status == 429,
            retry_after,
        },
        _ => Outcome::Permanent(format!(
            "HTTP {status}{}",
            status_message(content_type, body)
        )),
    }
}

/// A 2xx answer's body: an `ExportTraceServiceResponse` (protobuf, or OTLP/JSON from a server
/// that answers in JSON), or nothing. Anything else (a proxy's HTML page, text) means the
/// request did not reach an OTLP receiver: refused, not delivered.
fn answer_message(content_type: &str, body: &[u8]) -> Outcome {
    if body.is_empty() {
        return delivered(0, String::new());
    }
    let ct = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match ct.as_str() {
        "application/x-protobuf" | "application/protobuf" | "" => partial_success(body),
        "application/json" => match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(serde_json::Value::Object(o)) => {
                let p = o.get("partialSuccess").or_else(|| o.get("partial_success"));
                let rejected = p
                    .and_then(|p| p.get("rejectedSpans").or_else(|| p.get("rejected_spans")))
                    .and_then(|r| {
                        r.as_u64()
                            .or_else(|| r.as_str().and_then(|s| s.parse().ok()))
                    })
                    .unwrap_or(0);
                let why = p
                    .and_then(|p| p.get("errorMessage").or_else(|| p.get("error_message")))
                    .and_then(|m| m.as_str())
                    .unwrap_or("")
                    .to_string();
                delivered(rejected, why)
            }
            _ => not_a_response(&ct, body),
        },
        _ => not_a_response(&ct, body),
    }
}

fn delivered(rejected: u64, why: String) -> Outcome {
    Outcome::Delivered { rejected, why }
}

fn not_a_response(content_type: &str, body: &[u8]) -> Outcome {
    let ct = if content_type.is_empty() {
        "no content type"
    } else {
        content_type
    };
    Outcome::Permanent(format!(
        "a 2xx whose body ({ct}, {} bytes) is not an ExportTraceServiceResponse, so nothing says the spans were taken{}",
        body.len(),
        status_message("text", body)
    ))
}

/// The partial-success part of a protobuf `ExportTraceServiceResponse`.
fn partial_success(body: &[u8]) -> Outcome {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
    match ExportTraceServiceResponse::decode(body) {
        Ok(r) => match r.partial_success {
            Some(p) if p.rejected_spans > 0 => delivered(p.rejected_spans as u64, p.error_message),
            _ => delivered(0, String::new()),
        },
        Err(_) => not_a_response("application/x-protobuf", body),
    }
}

/// `: message` from an error body: a `google.rpc.Status` (protobuf) or short text.
fn status_message(content_type: &str, body: &[u8]) -> String {
    if body.is_empty() {
        return String::new();
    }
    if content_type.contains("protobuf") {
        if let Ok(s) = RpcStatus::decode(body) {
            if !s.message.is_empty() {
                return format!(": {}", clip(&s.message));
            }
        }
    }
    match std::str::from_utf8(body) {
        Ok(t) if !t.trim().is_empty() => format!(": {}", clip(t.trim())),
        _ => String::new(),
    }
}

fn clip(s: &str) -> String {
    const MAX: usize = 300;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// What a gRPC status means. Retried: CANCELLED, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED,
/// ABORTED, OUT_OF_RANGE, UNAVAILABLE, DATA_LOSS (with the delay of a `RetryInfo` detail);
/// everything else (INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED, UNAUTHENTICATED,
/// UNIMPLEMENTED, INTERNAL, …) is final.
pub fn grpc_outcome(code: u32, message: &str, details: Option<&[u8]>, response: &[u8]) -> Outcome {
    let name = grpc_code_name(code);
    let why = if message.is_empty() {
        format!("gRPC {name}")
    } else {
        format!("gRPC {name}: {}", clip(message))
    };
    match code {
        0 => partial_success(response),
        1 | 4 | 8 | 10 | 11 | 14 | 15 => Outcome::Transient {
            why,
            throttled: code == 8,
            retry_after: details.and_then(retry_info),
        },
        _ => Outcome::Permanent(why),
    }
}

fn grpc_code_name(code: u32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "unknown code",
    }
}

/// `google.rpc.Status`.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<ProtoAny>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoAny {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, prost::Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoDuration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

/// The delay of a `RetryInfo` among a status's details.
fn retry_info(details: &[u8]) -> Option<Duration> {
    let status = RpcStatus::decode(details).ok()?;
    let any = status
        .details
        .iter()
        .find(|d| d.type_url.ends_with("google.rpc.RetryInfo"))?;
    let d = RetryInfo::decode(any.value.as_slice()).ok()?.retry_delay?;
    let wait =
        Duration::from_secs(d.seconds.max(0) as u64) + Duration::from_nanos(d.nanos.max(0) as u64);
    Some(wait.min(MAX_RETRY_AFTER))
}

/// The message of a gRPC response body (length-prefixed, maybe gzip), inflated up to
/// [`MAX_ANSWER_BYTES`]. No message at all is an empty response.
fn unframe(data: &[u8], compressed: bool) -> Result<Vec<u8>, String> {
    if data.is_empty() {
        return Ok(Vec::new());
    }
    if data.len() < 5 {
        return Err("a truncated message frame".into());
    }
    let flag = data[0];
    let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
    let Some(msg) = data.get(5..5 + len) else {
        return Err("a truncated message frame".into());
    };
    if flag == 1 {
        if !compressed {
            return Err("a compressed message without grpc-encoding".into());
        }
        let mut out = Vec::new();
        let dec = flate2::read::GzDecoder::new(msg);
        std::io::Read::read_to_end(
            &mut std::io::Read::take(dec, MAX_ANSWER_BYTES as u64 + 1),
            &mut out,
        )
        .map_err(|e| format!("a message that does not inflate: {e}"))?;
        if out.len() > MAX_ANSWER_BYTES {
            return Err(format!(
                "a message inflating past {} KiB, which no OTLP response is",
                MAX_ANSWER_BYTES >> 10
            ));
        }
        return Ok(out);
    }
    Ok(msg.to_vec())
}

/// `grpc-message` is percent-encoded.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_statuses_are_classed_as_otlp_says() {
        for s in [400, 401, 403, 404, 413, 500] {
            assert!(
                matches!(http_outcome(s, None, "", b""), Outcome::Permanent(_)),
                "{s}"
            );
        }
        for s in [429, 502, 503, 504] {
            assert!(
                matches!(http_outcome(s, None, "", b""), Outcome::Transient { .. }),
                "{s}"
            );
        }
        assert_eq!(
            http_outcome(429, Some(Duration::from_secs(7)), "", b""),
            Outcome::Transient {
                why: "HTTP 429".into(),
                throttled: true,
                retry_after: Some(Duration::from_secs(7))
            }
        );
        assert_eq!(
            http_outcome(200, None, "application/x-protobuf", b""),
            Outcome::Delivered {
                rejected: 0,
                why: String::new()
            }
        );
        let text = http_outcome(400, None, "text/plain", b"bad span");
        assert_eq!(text, Outcome::Permanent("HTTP 400: bad span".into()));
    }

    #[test]
    fn partial_success_is_delivered_with_its_rejections() {
        use opentelemetry_proto::tonic::collector::trace::v1::{
            ExportTracePartialSuccess, ExportTraceServiceResponse,
        };
        let body = ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess {
                rejected_spans: 3,
                error_message: "too old".into(),
            }),
        }
        .encode_to_vec();
        assert_eq!(
            http_outcome(200, None, "application/x-protobuf", &body),
            Outcome::Delivered {
                rejected: 3,
                why: "too old".into()
            }
        );
    }

    #[test]
    fn grpc_codes_and_retry_info() {
        for c in [3, 5, 7, 12, 13, 16] {
            assert!(
                matches!(grpc_outcome(c, "", None, &[]), Outcome::Permanent(_)),
                "{c}"
            );
        }
        for c in [1, 4, 8, 10, 14] {
            assert!(
                matches!(grpc_outcome(c, "", None, &[]), Outcome::Transient { .. }),
                "{c}"
            );
        }
        let info = RetryInfo {
            retry_delay: Some(ProtoDuration {
                seconds: 2,
                nanos: 500_000_000,
            }),
        };
        let status = RpcStatus {
            code: 8,
            message: "slow down".into(),
            details: vec![ProtoAny {
                type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
                value: info.encode_to_vec(),
            }],
        }
        .encode_to_vec();
        assert_eq!(
            grpc_outcome(8, "slow down", Some(&status), &[]),
            Outcome::Transient {
                why: "gRPC RESOURCE_EXHAUSTED: slow down".into(),
                throttled: true,
                retry_after: Some(Duration::from_millis(2500))
            }
        );
    }

    #[test]
    fn retry_after_and_percent_decoding() {
        assert_eq!(parse_retry_after("5"), Some(Duration::from_secs(5)));
        assert_eq!(parse_retry_after("99999"), Some(MAX_RETRY_AFTER));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(percent_decode("a%20b%"), "a b%");
        assert_eq!(percent_decode("100%25"), "100%");
    }

    #[test]
    fn a_2xx_counts_only_with_a_response_message_and_gzip_inflates_only_to_the_cap() {
        assert!(matches!(
            http_outcome(200, None, "text/html; charset=utf-8", b"<html>sign in</html>"),
            Outcome::Permanent(w) if w.contains("not an ExportTraceServiceResponse")
        ));
        assert!(matches!(
            http_outcome(200, None, "application/json", b"{\"partialSuccess\":{\"rejectedSpans\":\"2\",\"errorMessage\":\"old\"}}"),
            Outcome::Delivered { rejected: 2, why } if why == "old"
        ));
        assert!(matches!(
            http_outcome(200, None, "application/json", b"<html>"),
            Outcome::Permanent(_)
        ));
        assert!(matches!(
            http_outcome(204, None, "", b""),
            Outcome::Delivered { rejected: 0, .. }
        ));
        let mut h = HeaderMap::new();
        h.insert(
            "location",
            HeaderValue::from_static("https://other.example:443/v1/traces?token=abc"),
        );
        assert_eq!(
            redirected(308, &h),
            Outcome::Permanent(
                "HTTP 308: the endpoint redirects to https://other.example:443/v1/traces; redirects are not followed, set the endpoint to the final address".into()
            )
        );
        // A gzip message inflating past the cap (8 MiB of zeros in ~8 KiB) is refused.
        let bomb = gzip(&vec![0u8; 8 << 20]).unwrap();
        assert!(bomb.len() < MAX_ANSWER_BYTES);
        let mut frame = vec![1u8];
        frame.extend_from_slice(&(bomb.len() as u32).to_be_bytes());
        frame.extend_from_slice(&bomb);
        assert!(unframe(&frame, true)
            .unwrap_err()
            .contains("inflating past 64 KiB"));
        assert!(unframe(&frame[..10], true).is_err());
        assert_eq!(unframe(&[], false), Ok(Vec::new()));
    }
}
