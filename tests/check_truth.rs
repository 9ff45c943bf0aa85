//! `check` tells the truth (issue 29): a table of broken configurations — the mistakes users
//! make, in every section — each reported completely (every path with a problem, in one run),
//! each message saying what to write instead; `check` and `run` refuse the same ones, both
//! with exit 2; the printed effective configuration reads back to itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::process::Command;

fn tracesift() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tracesift"))
}

const POLICY: &str = "policies: [{name: all, type: always_sample}]\n";

/// (name, YAML after the base, every path that must be reported, words each message holds).
struct Case {
    name: &'static str,
    yaml: &'static str,
    paths: &'static [&'static str],
    says: &'static [&'static str],
}

const fn case(
    name: &'static str,
    yaml: &'static str,
    paths: &'static [&'static str],
    says: &'static [&'static str],
) -> Case {
    Case {
        name,
        yaml,
        paths,
        says,
    }
}

const CASES: &[Case] = &[
    case("five problems in two sections",
        "kafka: {commit_interval: 1, compression: brotli, bogus: 1}\nstore: {tick: 1, on_overflow: drop}\n",
        &["kafka.commit_interval", "kafka.compression", "kafka.bogus", "store.tick", "store.on_overflow"],
        &["write it like 1s", "is not one of", "unknown field"]),
    case("two OTLP sinks each missing a field",
        "sinks: {otlp_http: [{name: a}], otlp_grpc: [{endpoint: \"http://x:4317\"}]}\n",
        &["sinks.otlp_http[0]", "sinks.otlp_grpc[0]"],
        &["`endpoint` is required", "`name` is required"]),
    case("policies and tiers, one of them broken",
        "tiers: [{name: t, sample_percentage: 200}]\n",
        &["tiers", "tiers[0].sample_percentage"], &["not both"]),
    case("a typo in a librdkafka property",
        "kafka: {properties: {sesion.timeout.ms: 30000}}\n",
        &["kafka.properties.sesion.timeout.ms"], &["not a librdkafka property"]),
    case("a librdkafka number that is not a number",
        "kafka: {properties: {session.timeout.ms: thirty}}\n",
        &["kafka.properties.session.timeout.ms"], &["librdkafka refuses the value"]),
    case("a CA file that does not exist",
        "kafka: {properties: {security.protocol: ssl, ssl.ca.location: /nonexistent/ca.pem}}\n",
        &["kafka.properties.ssl.ca.location"], &["/nonexistent/ca.pem"]),
    case("a negative size", "store: {max_bytes: -1}\n", &["store.max_bytes"], &["negative", "512MiB"]),
    case("a negative count", "store: {max_traces: -5}\n", &["store.max_traces"], &["-5 is not a whole number of 0 or more"]),
    case("a latency threshold with a unit",
        "policies: [{name: slow, type: latency, latency: {threshold_ms: 500ms}}]\n",
        &["policies[0].latency.threshold_ms"], &["\"500ms\" is not a whole number"]),
    case("a duration in words", "store: {decision_wait: five minutes}\n",
        &["store.decision_wait"], &["\"five minutes\" is not a duration; write it like 30s, 5m or 1h30m"]),
    case("an unknown section", "stor: {tick: 1s}\n", &["stor"], &["did you mean `store`"]),
    case("an unknown field with a near name", "store: {max_trace: 10}\n", &["store.max_trace"], &["did you mean `max_traces`"]),
    case("an unknown compression", "kafka: {compression: zip}\n", &["kafka.compression"], &["gzip"]),
    case("an unknown encoding", "kafka: {encoding: protobuff}\n", &["kafka.encoding"], &["is not one of"]),
    case("a boolean that is not", "kafka: {create_topics: yes please}\n", &["kafka.create_topics"], &["is not true or false"]),
    case("a list where text is expected", "kafka: {group_id: [a, b]}\n", &["kafka.group_id"], &["is not text"]),
    case("input topics as text", "kafka: {input_topics: otlp_spans}\n", &["kafka.input_topics"], &["is not a list"]),
    case("a size unit that does not exist", "kafka: {max_record_bytes: 5XB}\n", &["kafka.max_record_bytes"], &["size unit"]),
    case("a zero commit interval", "kafka: {commit_interval: 0s}\n", &["kafka.commit_interval"], &[]),
    case("a bad topic name", "kafka: {input_topics: [\"bad topic\"]}\n", &["kafka.input_topics[0]"], &["not a valid topic name"]),
    case("a reserved librdkafka property", "kafka: {properties: {enable.auto.commit: true}}\n", &["kafka.properties.enable.auto.commit"], &[]),
    case("transactions", "kafka: {properties: {transactional.id: x}}\n", &["kafka.properties.transactional.id"], &["idempotent"]),
    case("an unknown overflow policy", "store: {on_overflow: evict}\n", &["store.on_overflow"], &["is not one of"]),
    case("a store typo and a bad wait", "store: {decison_wait: 1s, decision_wait_after_root: soon}\n",
        &["store.decison_wait", "store.decision_wait_after_root"], &["did you mean `decision_wait`"]),
    case("an unknown policy type", "policies: [{name: a, type: always_sampel}]\n", &["policies[0].type"], &[]),
    case("a policy without a name", "policies: [{type: always_sample}]\n", &["policies[0].name"], &["name is required"]),
    case("two policies with one name",
        "policies: [{name: a, type: always_sample}, {name: a, type: always_sample}]\n", &["policies[1].name"], &[]),
    case("a probabilistic percentage of text",
        "policies: [{name: p, type: probabilistic, probabilistic: {sampling_percentage: half}}]\n",
        &["policies[0].probabilistic.sampling_percentage"], &["is not a number"]),
    case("an OTTL condition with a typo",
        "policies: [{name: o, type: ottl_condition, ottl_condition: {span: ['atributes[\"x\"] == 1']}}]\n",
        &["policies[0].ottl_condition.span[0], column 1"], &["did you mean \"attributes\""]),
    case("an OTLP sink URL without a scheme", "sinks: {otlp_http: [{name: a, endpoint: \"collector:4318\"}]}\n",
        &["sinks.otlp_http[0].endpoint"], &["http://"]),
    case("an OTLP TLS file missing, and a lone certificate",
        "sinks: {otlp_http: [{name: a, endpoint: \"https://x\", tls: {ca_file: /nonexistent/ca.pem, cert_file: /nonexistent/c.pem}}]}\n",
        &["sinks.otlp_http[0].tls.ca_file", "sinks.otlp_http[0].tls.cert_file", "sinks.otlp_http[0].tls.key_file"],
        &["cannot read /nonexistent/ca.pem"]),
    case("an OTLP compression typo", "sinks: {otlp_grpc: [{name: a, endpoint: \"http://x:4317\", compression: gzp}]}\n",
        &["sinks.otlp_grpc[0].compression"], &["did you mean `gzip`"]),
    case("a sampled-topic record mode typo", "sinks: {kafka: {records: batch}}\n", &["sinks.kafka.records"], &["is not one of"]),
    case("a parquet sink field typo", "sinks: {parquet: {enabeld: true}}\n", &["sinks.parquet.enabeld"], &["did you mean `enabled`"]),
    case("an archive URL that is not one", "archive: {hot: {url: \"ftp://x/y\"}}\n", &["archive.hot.url"], &[]),
    case("a tier without a URL", "archive: {tiers: [{name: warm, after: 1d}]}\n", &["archive.tiers[0]"], &["`url` is required"]),
    case("a retention in words", "archive: {retention: one year}\n", &["archive.retention"], &["is not a duration"]),
    case("a telemetry listen that is not an address", "telemetry: {listen: 9464, span_metrics: {enabled: maybe}}\n",
        &["telemetry.span_metrics.enabled"], &["is not true or false"]),
    case("span metrics that exclude an unknown label", "telemetry: {span_metrics: {exclude_dimensions: [span.colour]}}\n",
        &["telemetry.span_metrics.exclude_dimensions[0]"], &["service.name"]),
    case("service graph buckets out of order", "telemetry: {service_graph: {latency_histogram_buckets: [1s, 10ms]}}\n",
        &["telemetry.service_graph.latency_histogram_buckets"], &["increasing"]),
    case("a shutdown timeout without a unit", "shutdown_timeout: 30\n", &["shutdown_timeout"], &["30s"]),
    case("an unset variable", "kafka: {group_id: \"${env:TRACESIFT_SURELY_UNSET}\"}\n", &["kafka.group_id"], &["is not set"]),
    case("an empty secret", "kafka: {properties: {sasl.password: \"${env:TRACESIFT_EMPTY_SECRET}\"}}\n",
        &["kafka.properties.sasl.password"], &["set but empty"]),
    case("an unset header variable does not hide the TLS file problems",
        "sinks: {otlp_http: [{name: tempo, endpoint: \"https://x\", headers: {authorization: \"Bearer ${env:TRACESIFT_SURELY_UNSET}\"}, tls: {ca_file: /nonexistent/ca.pem, cert_file: /nonexistent/c.pem, key_file: /nonexistent/k.pem}}]}\n",
        &["sinks.otlp_http[0].headers.authorization", "sinks.otlp_http[0].tls.ca_file", "sinks.otlp_http[0].tls.cert_file", "sinks.otlp_http[0].tls.key_file"],
        &["is not set", "cannot read /nonexistent/k.pem"]),
    case("an unset bucket is reported once, at the URL",
        "archive: {hot: {url: \"s3://${env:TRACESIFT_SURELY_UNSET}/tracesift\", options: {region: x}}}\n",
        &["archive.hot.url"], &["is not set"]),
    case("brokers as a number", "kafka: {brokers: 9092}\n", &["kafka.brokers"], &["host:port"]),
];

fn reported(out: &std::process::Output) -> BTreeSet<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| l.strip_prefix("  - "))
        .map(|l| l.split(": ").next().unwrap_or("").to_string())
        .collect()
}

#[test]
fn every_broken_configuration_is_reported_whole_by_check_and_refused_alike_by_run() {
    assert!(CASES.len() >= 40, "{} cases", CASES.len());
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (i, c) in CASES.iter().enumerate() {
        let base = if c.yaml.contains("policies:")
            || c.yaml.contains("tiers:") && !c.name.contains("policies and tiers")
        {
            String::new()
        } else {
            POLICY.to_string()
        };
        let text = format!("{base}{}", c.yaml);
        let f = dir.path().join(format!("case{i}.yaml"));
        std::fs::write(&f, &text).unwrap();
        let run = |verb: &str| {
            tracesift()
                .args([verb, "-c"])
                .arg(&f)
                .env("TRACESIFT_EMPTY_SECRET", "")
                .env_remove("TRACESIFT_SURELY_UNSET")
                .env("TRACESIFT_LOG", "off")
                .output()
                .unwrap()
        };
        let check = run("check");
        let stderr = String::from_utf8_lossy(&check.stderr).to_string();
        let got = reported(&check);
        let want: BTreeSet<String> = c.paths.iter().map(|p| p.to_string()).collect();
        if check.status.code() != Some(2) {
            failures.push(format!(
                "{}: check exit {:?}\n{text}{stderr}",
                c.name,
                check.status.code()
            ));
            continue;
        }
        if !want.is_subset(&got) {
            failures.push(format!(
                "{}: reported {got:?}, want at least {want:?}\n{text}{stderr}",
                c.name
            ));
        }
        for s in c.says {
            if !stderr.contains(s) {
                failures.push(format!("{}: no `{s}` in\n{stderr}", c.name));
            }
        }
        let r = run("run");
        if r.status.code() != Some(2) {
            failures.push(format!(
                "{}: run exit {:?}, check exit 2\n{}",
                c.name,
                r.status.code(),
                String::from_utf8_lossy(&r.stderr)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases:\n\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n\n")
    );
}

#[test]
fn the_effective_configuration_reads_back_to_itself() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.yaml");
    std::fs::write(
        &f,
        format!("{POLICY}archive: {{retention: 365d, hot: {{url: \"file:///tmp/x\"}}}}\nstore: {{max_bytes: 1GB, decision_wait_after_root: 0}}\nkafka: {{brokers: [a:9092, b:9092], max_record_bytes: 4MiB}}\n"),
    )
    .unwrap();
    let first = tracesift().args(["check", "-c"]).arg(&f).output().unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let printed = String::from_utf8_lossy(&first.stdout).to_string();
    for shown in [
        "retention: 365d",
        "max_bytes: 1GB",
        "decision_wait_after_root: 0s",
        "brokers: a:9092,b:9092",
        "group_instance_id: null",
        "tiers: []",
        "lease_options: {}",
    ] {
        assert!(printed.contains(shown), "`{shown}` not in\n{printed}");
    }
    let g = dir.path().join("again.yaml");
    std::fs::write(&g, &printed).unwrap();
    let second = tracesift().args(["check", "-c"]).arg(&g).output().unwrap();
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert_eq!(
        printed,
        String::from_utf8_lossy(&second.stdout),
        "printed again the same"
    );
}

#[test]
fn the_readme_reference_block_has_every_field_check_prints_and_no_other() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let block = readme
        .split("## Configuration")
        .nth(1)
        .and_then(|s| s.split("```yaml").nth(1))
        .and_then(|s| s.split("```").next())
        .unwrap();
    let documented: serde_norway::Value = serde_norway::from_str(block).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.yaml");
    std::fs::write(&f, POLICY).unwrap();
    let out = tracesift().args(["check", "-c"]).arg(&f).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: serde_norway::Value =
        serde_norway::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
    fn keys(v: &serde_norway::Value, at: &str, out: &mut BTreeSet<String>) {
        if let serde_norway::Value::Mapping(m) = v {
            for (k, v) in m {
                let k = k.as_str().unwrap_or_default();
                let p = if at.is_empty() {
                    k.to_string()
                } else {
                    format!("{at}.{k}")
                };
                // Free-form maps (client properties, store options, headers) hold examples.
                if !["properties", "options", "lease_options", "headers"].contains(&k) {
                    keys(v, &p, out);
                }
                out.insert(p);
            }
        }
    }
    let (mut want, mut got) = (BTreeSet::new(), BTreeSet::new());
    keys(&printed, "", &mut want);
    keys(&documented, "", &mut got);
    // Lists of examples (policies, tiers, OTLP sinks) are documented by their own sections.
    let listed = |p: &String| {
        [
            "policies",
            "tiers",
            "sinks.otlp_http",
            "sinks.otlp_grpc",
            "archive.tiers",
        ]
        .iter()
        .any(|l| p.starts_with(&format!("{l}.")))
    };
    let missing: Vec<&String> = want
        .iter()
        .filter(|p| !got.contains(*p) && !listed(p))
        .collect();
    let extra: Vec<&String> = got
        .iter()
        .filter(|p| !want.contains(*p) && !listed(p))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "README's configuration block against `check`:\nnot documented: {missing:?}\nnot a field: {extra:?}"
    );
}
