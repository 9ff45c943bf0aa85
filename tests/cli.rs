//! The binary as a user runs it: `check` on good and bad files, and the demo end to end (its
//! Parquet read back by DuckDB with the query the demo prints).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;

fn tracesift() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tracesift"))
}

#[test]
fn check_prints_the_effective_config() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("ok.yaml");
    std::fs::write(
        &f,
        "kafka: {brokers: 'k1:9092,k2:9092'}\npolicies:\n  - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}\n",
    )
    .unwrap();
    let out = tracesift().args(["check", "-c"]).arg(&f).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Given values and filled-in defaults both appear.
    assert!(stdout.contains("brokers: k1:9092,k2:9092"), "{stdout}");
    assert!(stdout.contains("decision_wait: 10s"), "{stdout}");
    assert!(stdout.contains("name: errors"), "{stdout}");
}

/// Secrets given literally, from the environment and from a file: `check` shows that each is
/// set and none of their values; reserved client settings are refused, every one listed.
#[test]
fn check_never_prints_a_secret_and_refuses_reserved_settings() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("s3-secret");
    std::fs::write(&secret_file, "S3-SECRET-FROM-FILE\n").unwrap();
    let f = dir.path().join("secrets.yaml");
    std::fs::write(
        &f,
        format!(
            r#"
kafka:
  brokers: "${{env:TS_BROKERS}}"
  group_instance_id: ${{env:TS_POD}}
  properties:
    security.protocol: sasl_ssl
    sasl.mechanisms: SCRAM-SHA-512
    sasl.username: alice
    sasl.password: ${{env:TS_KAFKA_PASSWORD}}
    ssl.key.password: LITERAL-KEY-PASSWORD
    ssl.keystore.password: LITERAL-CLIENT-SECRET
    session.timeout.ms: 6000
archive:
  tiers:
    - name: cold
      url: s3://bucket/traces
      after: 30d
      options: {{endpoint: "http://127.0.0.1:3900", region: garage, access_key_id: GKvisible, secret_access_key: "${{file:{}}}", session_token: LITERAL-SESSION-TOKEN}}
policies: [{{name: all, type: always_sample}}]
"#,
            secret_file.display()
        ),
    )
    .unwrap();
    let out = tracesift()
        .args(["check", "-c"])
        .arg(&f)
        .env("TS_BROKERS", "b1:9093,b2:9093")
        .env("TS_POD", "tracesift-2")
        .env("TS_KAFKA_PASSWORD", "ENV-KAFKA-PASSWORD")
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}");
    for secret in [
        "ENV-KAFKA-PASSWORD",
        "LITERAL-KEY-PASSWORD",
        "LITERAL-CLIENT-SECRET",
        "S3-SECRET-FROM-FILE",
        "LITERAL-SESSION-TOKEN",
    ] {
        assert!(!all.contains(secret), "{secret} printed:\n{all}");
    }
    // Five secrets, plus the access key id: object-store options print only where and how to
    // connect (README, "Secrets").
    assert_eq!(all.matches("<redacted: set>").count(), 6, "{all}");
    assert!(!all.contains("GKvisible"), "{all}");
    for shown in [
        "brokers: b1:9093,b2:9093",
        "group_instance_id: tracesift-2",
        "sasl.username: alice",
        "endpoint: http://127.0.0.1:3900",
        "session.timeout.ms: '6000'",
    ] {
        assert!(all.contains(shown), "{shown} missing:\n{all}");
    }

    // An unset variable and reserved settings: every problem, no value.
    std::fs::write(
        &f,
        "kafka:\n  properties: {enable.idempotence: false, acks: '1', isolation.level: read_uncommitted, auto.offset.reset: latest, enable.auto.commit: true, sasl.password: '${env:TS_UNSET_VAR}'}\npolicies: [{name: all, type: always_sample}]\n",
    )
    .unwrap();
    let out = tracesift().args(["check", "-c"]).arg(&f).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("6 problem(s)"), "{err}");
    for key in [
        "enable.idempotence",
        "acks",
        "isolation.level",
        "auto.offset.reset",
        "enable.auto.commit",
    ] {
        assert!(
            err.contains(&format!(
                "kafka.properties.{key}: is set by tracesift itself"
            )),
            "{key}: {err}"
        );
    }
    assert!(err.contains("TS_UNSET_VAR is not set"), "{err}");
}

/// Vendors name their credential headers freely, librdkafka and object_store their secret keys:
/// `check` prints no header value of an OTLP sink, no `kafka.properties` value whose key ends
/// in password, secret, token, key or credentials, and no object-store option outside the
/// documented list.
#[test]
fn check_prints_no_header_value_and_no_secret_looking_property_or_option() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("vendors.yaml");
    std::fs::write(
        &f,
        r#"
kafka:
  properties:
    ssl.key.password: PROP-CLIENT-KEY
    ssl.keystore.password: PROP-CREDENTIALS
    sasl.username: shown-user
sinks:
  otlp_http:
    - name: newrelic
      endpoint: http://127.0.0.1:4318
      headers: {x-insert-key: HDR-INSERT-KEY, x-license-key: HDR-LICENSE-KEY, x-sentry-auth: "Sentry sentry_key=HDR-SENTRY", x-scope-orgid: HDR-TENANT, dsn: "https://HDR-DSN@o1.ingest"}
archive:
  tiers:
    - name: cold
      url: s3://bucket/traces
      after: 30d
      options: {endpoint: "http://127.0.0.1:3900", region: garage, access_key_id: OPT-KEY-ID, secret_access_key: OPT-SECRET, proxy_url: "http://OPT-PROXY-USER:pw@proxy:3128", token: OPT-TOKEN}
policies: [{name: all, type: always_sample}]
"#,
    )
    .unwrap();
    let out = tracesift().args(["check", "-c"]).arg(&f).output().unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}");
    for secret in [
        "PROP-CLIENT-KEY",
        "PROP-CREDENTIALS",
        "HDR-INSERT-KEY",
        "HDR-LICENSE-KEY",
        "HDR-SENTRY",
        "HDR-TENANT",
        "HDR-DSN",
        "OPT-KEY-ID",
        "OPT-SECRET",
        "OPT-PROXY-USER",
        "OPT-TOKEN",
    ] {
        assert!(!all.contains(secret), "{secret} printed:\n{all}");
    }
    assert_eq!(all.matches("<redacted: set>").count(), 11, "{all}");
    for shown in [
        "sasl.username: shown-user",
        "x-insert-key: '<redacted: set>'",
        "endpoint: http://127.0.0.1:3900",
        "region: garage",
    ] {
        assert!(all.contains(shown), "{shown} missing:\n{all}");
    }
}

#[test]
fn check_lists_every_problem_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.yaml");
    std::fs::write(
        &f,
        r#"
kafka:
  input_topics: ["bad topic"]
  commit_interval: 0s
store:
  max_traces: 0
policies:
  - {name: slow, type: latency, latency: {threshold_ms: 500, extra: 1}}
  - {name: x, type: ottl_condition, ottl_condition: {span: ['nme == "checkout"']}}
telemetry: {listen: nowhere}
"#,
    )
    .unwrap();
    let out = tracesift().args(["check", "-c"]).arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for path in [
        "kafka.input_topics",
        "kafka.commit_interval",
        "store.max_traces",
        "policies[0].latency",
        "policies[1].ottl_condition.span[0], column 1",
        "telemetry.listen",
    ] {
        assert!(stderr.contains(path), "{path} missing from:\n{stderr}");
    }
    assert!(stderr.contains("did you mean \"name\"?"), "{stderr}");

    let missing = tracesift()
        .args(["check", "-c", "/nonexistent/tracesift.yaml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/tracesift.yaml"));
}

#[test]
fn demo_runs_end_to_end_and_its_query_works() {
    let dir = tempfile::tempdir().unwrap();
    let out = tracesift()
        .args(["demo", "--duration", "4s", "--rate", "300", "--dir"])
        .arg(dir.path())
        .env("TRACESIFT_LOG", "info")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    // Nothing a newcomer sees is an error: reaching the end of a partition and the demo
    // stopping its own cluster are normal (debug).
    let errors: Vec<&str> = stdout
        .lines()
        .chain(stderr.lines())
        .filter(|l| {
            l.contains(" ERROR ") || l.contains("AllBrokersDown") || l.contains("PartitionEOF")
        })
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let field = |name: &str| -> u64 {
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no `{name}` in summary:\n{stdout}"));
        line.trim_start()[name.len()..]
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("bad `{name}` line: {line}"))
    };
    let decided = field("traces decided");
    let kept = field("traces kept");
    let dead = field("dead-letter");
    assert_eq!(decided, 1200, "every generated trace decided:\n{stdout}");
    assert!(kept > 0 && kept < decided, "{stdout}");
    assert_eq!(dead, 3, "the demo's malformed records:\n{stdout}");
    assert!(stdout.contains("parquet "), "{stdout}");

    // The query the demo prints, run by DuckDB on what it wrote.
    let hot = dir.path().canonicalize().unwrap().join("hot");
    let script = format!(
        r#"
import duckdb
rows = duckdb.sql("""SELECT sampling_policy, count(DISTINCT trace_id) AS traces, count(*) AS spans
  FROM read_parquet('{}/spans/v2/**/*.parquet', hive_partitioning = true) GROUP BY 1""").fetchall()
print(sum(r[1] for r in rows))
"#,
        hot.display()
    );
    let traces: u64 = support::run_python(&script).trim().parse().unwrap();
    assert_eq!(traces, kept, "Parquet holds every kept trace");

    // `tracesift trace` finds one of them, span for span as DuckDB counts it.
    let pick = format!(
        r#"
import duckdb
con = duckdb.connect()
t, n = con.execute("""SELECT lower(hex(trace_id)), count(*) FROM read_parquet('{}/spans/v2/**/*.parquet')
  GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1""").fetchone()
print(t, n)
"#,
        hot.display()
    );
    let out = support::run_python(&pick);
    let (id, n) = out.trim().split_once(' ').unwrap();
    let cfg = dir.path().join("lookup.yaml");
    std::fs::write(
        &cfg,
        format!(
            "archive: {{hot: {{url: \"file://{}\"}}}}\npolicies: [{{name: all, type: always_sample}}]\n",
            hot.display()
        ),
    )
    .unwrap();
    let found = tracesift()
        .args(["trace", id, "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    let tree = String::from_utf8_lossy(&found.stdout);
    assert!(
        found.status.success(),
        "{tree}{}",
        String::from_utf8_lossy(&found.stderr)
    );
    assert_eq!(tree.lines().count().to_string(), n, "{tree}");
    let absent = tracesift()
        .args(["trace", &"0f".repeat(16), "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(absent.status.code(), Some(1));
}

/// What a terminal shows for `bytes`: carriage returns go back to the line's start, `ESC [2K`
/// clears the line, newlines end it; colour sequences are dropped.
fn screen(bytes: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    let (mut lines, mut line, mut col) = (Vec::new(), Vec::<char>::new(), 0usize);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => col = 0,
            '\n' => {
                lines.push(line.iter().collect::<String>());
                line.clear();
                col = 0;
            }
            '\x1b' => {
                // CSI: ESC [ params final-byte.
                if chars.next_if_eq(&'[').is_some() {
                    let mut params = String::new();
                    for p in chars.by_ref() {
                        if p.is_ascii_alphabetic() {
                            if p == 'K' && params == "2" {
                                line.clear();
                            }
                            break;
                        }
                        params.push(p);
                    }
                }
            }
            c => {
                if col < line.len() {
                    line[col] = c;
                } else {
                    line.push(c);
                }
                col += 1;
            }
        }
    }
    if !line.is_empty() {
        lines.push(line.into_iter().collect());
    }
    lines
}

/// On a terminal the demo's progress line (redrawn in place with `\r`) and the log lines never
/// share a line: a log line clears the progress line first, the progress line is drawn again
/// below it. Run in a pseudo-terminal (`script`), with debug logs so lines arrive while the
/// progress line is up.
#[test]
fn on_a_terminal_log_lines_never_break_the_progress_line() {
    let dir = tempfile::tempdir().unwrap();
    let cmd = format!(
        "{} demo --duration 3s --rate 100 --dir {}",
        env!("CARGO_BIN_EXE_tracesift"),
        dir.path().display()
    );
    let out = Command::new("script")
        .args(["-q", "-e", "-c", &cmd, "/dev/null"])
        .env("TRACESIFT_LOG", "debug")
        .output()
        .expect("`script` (util-linux) runs the demo in a pseudo-terminal");
    assert!(
        out.status.success(),
        "demo failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = screen(&out.stdout);
    let is_progress = |l: &str| l.contains("] spans in ");
    let is_log = |l: &str| {
        [" DEBUG ", " INFO ", " WARN ", " ERROR "]
            .iter()
            .any(|k| l.contains(k))
    };
    let first_progress = lines
        .iter()
        .position(|l| is_progress(l))
        .unwrap_or_else(|| panic!("no progress line on the screen: {lines:#?}"));
    assert!(
        lines[first_progress..].iter().any(|l| is_log(l)),
        "no log line came while the progress line was up, so nothing was tested: {lines:#?}"
    );
    for l in &lines {
        assert!(
            !(is_progress(l) && is_log(l)),
            "a log line and the progress line share a line: {l:?}"
        );
        if is_progress(l) {
            assert!(
                l.starts_with('['),
                "progress line not at the line's start: {l:?}"
            );
        }
        if is_log(l) {
            assert!(
                l.starts_with("20"),
                "log line not at the line's start (it followed other text): {l:?}"
            );
        }
    }
}
