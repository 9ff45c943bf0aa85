//! What lives next to tracesift cannot take it down, tried against the release binary as a
//! user would run it: scrapers, load balancers and port scanners that open connections and
//! send nothing, scrapers that never read their answer, and a client that trickles its request
//! a byte per second, while a kubelet-style probe (1 s timeout) asks `/healthz` and `/readyz`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::*;

/// One probe as a kubelet makes it: connect, ask, read the status line, all within `limit`.
fn probe(addr: SocketAddr, path: &str, limit: Duration) -> Result<u16, String> {
    let mut s = TcpStream::connect_timeout(&addr, limit).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(limit)).unwrap();
    s.set_write_timeout(Some(limit)).unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut head = [0u8; 64];
    let n = s.read(&mut head).map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&head[..n]);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status line: {text:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_answer_beside_idle_unread_and_trickling_connections() {
    let broker = Broker::start();
    let brokers = broker.brokers.clone();
    create_topic(&brokers, "otlp_spans", 2).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let member = Member::start(
        dir.path(),
        "member",
        &format!(
            "kafka: {{brokers: \"{brokers}\", create_topics: true, group_id: neighbours}}\npolicies: [{{name: all, type: always_sample}}]\nsinks: {{parquet: {{enabled: false}}}}\ntelemetry: {{listen: \"{addr}\"}}\n"
        ),
        &[],
    );
    // Up and ready (it owns the input topic's partitions).
    let deadline = Instant::now() + Duration::from_secs(60);
    while probe(addr, "/readyz", Duration::from_secs(1)) != Ok(200) {
        assert!(
            Instant::now() < deadline,
            "the member never became ready:\n{}",
            member.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // 50 connections that send nothing, 10 `/metrics` requests whose answer is never read.
    let mut neighbours: Vec<TcpStream> =
        (0..50).map(|_| TcpStream::connect(addr).unwrap()).collect();
    for _ in 0..10 {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: scraper\r\n\r\n")
            .unwrap();
        neighbours.push(s);
    }
    for round in 0..20 {
        for path in ["/healthz", "/readyz"] {
            assert_eq!(
                probe(addr, path, Duration::from_secs(1)),
                Ok(200),
                "round {round}, {path}:\n{}",
                member.log()
            );
        }
    }
    // A request trickled a byte per second is cut off by the header timeout: the member closes
    // the connection before the request is complete.
    let request = b"GET /healthz HTTP/1.1\r\nHost: a-very-slow-client.example\r\n\r\n";
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_millis(900)))
        .unwrap();
    let mut sent = 0;
    let mut closed = false;
    while sent < request.len() {
        if slow.write_all(&request[sent..sent + 1]).is_err() {
            closed = true;
            break;
        }
        sent += 1;
        let mut buf = [0u8; 256];
        match slow.read(&mut buf) {
            // Closed by the member (possibly after a 408 answer).
            Ok(_) => {
                closed = true;
                break;
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    assert!(
        closed && sent < request.len(),
        "a trickling client was not cut off ({sent} of {} bytes sent)",
        request.len()
    );
    // The endpoint still answers, and the neighbours did not cost it anything it keeps.
    assert_eq!(probe(addr, "/healthz", Duration::from_secs(1)), Ok(200));
    drop(neighbours);
    // A caught-up member logs no error (end of partition is its normal state).
    let log = member.log();
    member.stop();
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" ERROR ") || l.contains("PartitionEOF"))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
}
