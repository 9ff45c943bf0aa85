//! Fault injection for the tests, in one place: `TRACESIFT_FAILPOINT` names where a test
//! process should crash, freeze, stall or hang. It is compiled in only with the `failpoints`
//! cargo feature, which the test command enables (`deploy/local/test.sh`); without it (any
//! release or `cargo install` build) no failpoint exists and nothing reads the variable.
//!
//! - `STEP[@TIER]` aborts the process at a lifecycle step (as `kill -9` would); `=stop` after
//!   it stops the process instead (SIGSTOP, as a frozen container) until it is continued.
//!   Steps: `compact-after-upload`, `compact-after-publish`, `move-after-copy`,
//!   `move-after-publish`, `move-after-delete`, `manifest-before-write`.
//! - `sink_hang@P[,P…]`: kept spans of those partitions go to a sink that never acknowledges.
//! - `hold@P:OFFSET:MS`: the poll thread holds partition P (paused) for MS milliseconds just
//!   before handing over OFFSET.

#[cfg(feature = "failpoints")]
fn spec() -> Option<String> {
    std::env::var("TRACESIFT_FAILPOINT").ok()
}

#[cfg(not(feature = "failpoints"))]
fn spec() -> Option<String> {
    None
}

/// A lifecycle step of the archive: aborts or stops here if the failpoint names it.
pub fn step(step: &str, tier: &str) {
    let Some(v) = spec() else {
        return;
    };
    let (spec, action) = v.split_once('=').unwrap_or((v.as_str(), "abort"));
    let (want, only) = spec.split_once('@').unwrap_or((spec, ""));
    if want != step || !(only.is_empty() || only == tier) {
        return;
    }
    if action == "stop" {
        eprintln!("failpoint {v}: stopping");
        let _ = std::process::Command::new("kill")
            .args(["-STOP", &std::process::id().to_string()])
            .status();
        eprintln!("failpoint {v}: continued");
        return;
    }
    eprintln!("failpoint {v}: aborting");
    std::process::abort();
}

/// Whether the kept spans of `partition` go to a sink that never acknowledges.
pub fn sink_hangs(partition: i32) -> bool {
    spec().is_some_and(|v| {
        v.strip_prefix("sink_hang@").is_some_and(|ps| {
            ps.split(',')
                .any(|p| p.trim().parse::<i32>().ok() == Some(partition))
        })
    })
}

/// `(partition, offset, ms)` of a `hold@` failpoint.
pub fn hold() -> Option<(i32, i64, u64)> {
    let v = spec()?;
    let mut it = v.strip_prefix("hold@")?.split(':');
    let p = it.next()?.parse().ok()?;
    let o = it.next()?.parse().ok()?;
    let ms = it.next()?.parse().ok()?;
    Some((p, o, ms))
}
