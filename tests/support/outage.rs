//! Shared by the outage tests: a process's CPU time and resident memory, steady traffic, and
//! metric scraping.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::producer::FutureProducer;

use super::{client, otlp_record, send_trace_record, test_span};

pub const MIB: u64 = 1 << 20;

/// (user + system CPU time, resident bytes) of a process.
pub fn proc_usage(pid: u32) -> (Duration, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let cpu = stat.rfind(')').map_or(Duration::ZERO, |i| {
        let f: Vec<&str> = stat[i + 2..].split_whitespace().collect();
        let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
        Duration::from_millis(ticks * 10)
    });
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024);
    (cpu, rss)
}

pub fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

pub async fn get(port: u16, path: &str) -> (u16, String) {
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    tracesift::telemetry::server::http_get(addr, path)
        .await
        .unwrap_or((0, String::new()))
}

/// Steady traffic: one 3-span trace every 20 ms until stopped; the ids sent and the ends.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    pub task: tokio::task::JoinHandle<(Vec<String>, BTreeMap<i32, i64>)>,
    pub sent: Arc<AtomicU64>,
}

impl Traffic {
    pub fn start(brokers: &str) -> Traffic {
        let producer: FutureProducer = client(brokers).set("linger.ms", "5").create().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (stop2, sent2) = (Arc::clone(&stop), Arc::clone(&sent));
        let task = tokio::spawn(async move {
            let mut ids = Vec::new();
            let mut ends = BTreeMap::new();
            let mut n: u32 = 0;
            while !stop2.load(Ordering::Relaxed) {
                n += 1;
                let t = u128::from(n)
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)
                    .to_be_bytes();
                let spans = (1..=3).map(|k| test_span(&t, k, false)).collect();
                send_trace_record(&producer, &t, &otlp_record(spans), &mut ends).await;
                ids.push(hex::encode(t));
                sent2.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (ids, ends)
        });
        Traffic { stop, task, sent }
    }

    pub async fn stop(self) -> (Vec<String>, BTreeMap<i32, i64>) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

/// The peak resident memory of a process, sampled every 100 ms until stopped.
pub struct PeakRss {
    peak: Arc<Mutex<u64>>,
    done: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl PeakRss {
    pub fn sample(pid: u32) -> PeakRss {
        let peak = Arc::new(Mutex::new(0u64));
        let done = Arc::new(AtomicBool::new(false));
        let (p2, d2) = (Arc::clone(&peak), Arc::clone(&done));
        let thread = std::thread::spawn(move || {
            while !d2.load(Ordering::Relaxed) {
                let rss = proc_usage(pid).1;
                let mut p = p2.lock().unwrap();
                *p = (*p).max(rss);
                drop(p);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        PeakRss { peak, done, thread }
    }

    /// Stops sampling; the peak in bytes.
    pub fn stop(self) -> u64 {
        self.done.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
        let p = *self.peak.lock().unwrap();
        p
    }
}
