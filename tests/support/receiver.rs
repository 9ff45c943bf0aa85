//! The tests' OTLP receiver (`otlp_receiver.py`: the official OpenTelemetry proto types and
//! grpcio, an encoder/decoder independent of tracesift's), driven over its stdin.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// A running receiver: OTLP/HTTP on `http_port`, OTLP/gRPC on `grpc_port`.
pub struct Receiver {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    pub http_port: u16,
    pub grpc_port: u16,
    /// A gRPC server that accepts no compression (refuses gzip requests with UNIMPLEMENTED).
    pub grpc_identity_port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub proto: String,
    /// Whether the body came gzip (HTTP; grpcio does not tell).
    pub gzip: Option<bool>,
    pub status: i64,
    pub auth: String,
    /// Accepted spans: (trace id hex, span id hex, trace state).
    pub spans: Vec<(String, String, String)>,
    /// Why strict decoding failed, if it did.
    pub bad: Option<String>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("requests.jsonl");
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/otlp_receiver.py"
        );
        let mut child = Command::new(super::python())
            .arg(script)
            .arg(&log)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert!(
            line.starts_with("READY"),
            "the OTLP receiver did not start (needs grpcio, grpcio-status and opentelemetry-proto \
             in the venv; ./deploy/local/test.sh installs them): {line:?}"
        );
        let port = |k: &str| -> u16 {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .unwrap()
                .parse()
                .unwrap()
        };
        Receiver {
            http_port: port("http="),
            grpc_port: port("grpc="),
            grpc_identity_port: port("grpc_identity="),
            child,
            stdin,
            stdout,
            log,
            _dir: dir,
        }
    }

    /// Sends one command (`http 503`, `grpc 14 2`, `stop http`, `start grpc`) and waits for it.
    pub fn command(&mut self, cmd: &str) {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ok", "receiver command {cmd:?}");
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                Seen {
                    proto: v["proto"].as_str().unwrap().to_string(),
                    gzip: v["gzip"].as_bool(),
                    status: v["status"].as_i64().unwrap(),
                    auth: v["auth"].as_str().unwrap_or("").to_string(),
                    spans: v["spans"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .map(|s| {
                                    (
                                        s["trace_id"].as_str().unwrap().to_string(),
                                        s["span_id"].as_str().unwrap().to_string(),
                                        s["trace_state"].as_str().unwrap().to_string(),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                    bad: v["bad"].as_str().map(str::to_string),
                }
            })
            .collect()
    }

    /// Accepted spans by trace id (hex) for `proto`, and in how many requests each trace came.
    pub fn traces(&self, proto: &str) -> HashMap<String, (Vec<String>, usize)> {
        let mut out: HashMap<String, (Vec<String>, usize)> = HashMap::new();
        for s in self.seen().into_iter().filter(|s| s.proto == proto) {
            let mut in_this: HashMap<&str, ()> = HashMap::new();
            for (t, span, _) in &s.spans {
                let e = out.entry(t.clone()).or_default();
                e.0.push(span.clone());
                if in_this.insert(t, ()).is_none() {
                    e.1 += 1;
                }
            }
        }
        out
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
