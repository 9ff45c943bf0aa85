//! What `deploy/` ships, checked against the real tools and the real binary:
//! - every kustomize overlay renders with `kubectl kustomize` and validates offline against the
//!   Kubernetes schemas (`kubernetes-validate --strict`) and the KEDA / Prometheus Operator CRD
//!   schemas (compiled by @kubernetes-models, npm); the manifests agree with the binary (the
//!   subcommands and flags exist, the mounted configuration passes `tracesift check` and
//!   `topology check`, the metrics port is `telemetry.listen`'s, the grace period outlasts
//!   `shutdown_timeout`, the memory limit covers the memory formula for the partitions a pod
//!   owns in the smallest group, the autoscaler never goes past the input's partitions);
//! - the alerts pass `promtool check rules` and `promtool test rules`, each firing and silent;
//! - the dashboard uses only its Prometheus datasource variable and metrics `telemetry` exports;
//! - the systemd units pass `systemd-analyze verify` with the real binary;
//! - a real Prometheus scraping a real `tracesift run` (and compactor) against tansu loads the
//!   alert rules and returns series for every dashboard and alert expression.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::{tool_on_path as tool, urlencode, Proc};

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_norway::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tracesift")
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn venv_bin(name: &str) -> PathBuf {
    let p = support::python().parent().unwrap().join(name);
    assert!(
        p.is_file(),
        "{} missing: ./deploy/local/test.sh installs it into the cached venv",
        p.display()
    );
    p
}

fn node_modules() -> PathBuf {
    let p = std::env::var_os("TRACESIFT_NODE_MODULES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/tracesift/npm/node_modules")
        });
    assert!(
        p.join("@kubernetes-models/keda").is_dir(),
        "the CRD schemas are not installed at {}: ./deploy/local/test.sh installs them",
        p.display()
    );
    p
}

fn render(overlay: &str) -> String {
    let out = run(Command::new(tool("kubectl"))
        .arg("kustomize")
        .arg(repo().join("deploy/k8s/overlays").join(overlay)));
    assert!(
        out.status.success(),
        "kubectl kustomize {overlay}: {}",
        text(&out)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn docs(yaml: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn kind<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the rendered manifests"))
}

fn kinds<'a>(docs: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> {
    docs.iter().filter(move |d| d["kind"] == kind)
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v:?}"))
}

/// Kubernetes quantity of memory in bytes (`2304Mi`, `3Gi`, `512M`, `1000`).
fn quantity(q: &str) -> u64 {
    let units = [
        ("Ki", 1u64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ];
    for (u, m) in units {
        if let Some(n) = q.strip_suffix(u) {
            return n.parse::<u64>().unwrap() * m;
        }
    }
    q.parse().unwrap()
}

/// Validates a rendered overlay: the Kubernetes schemas for built-in kinds, the CRD schemas for
/// custom resources. Returns the validators' output.
fn validate(rendered: &str, what: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rendered.yaml");
    std::fs::write(&file, rendered).unwrap();
    let out = run(Command::new(venv_bin("kubernetes-validate"))
        .arg("--strict")
        .arg(&file));
    let k8s = text(&out);
    if !out.status.success() {
        return Err(format!("kubernetes-validate on {what}:\n{k8s}"));
    }
    // Kinds without a built-in schema: only the custom resources, validated next.
    for line in k8s.lines().filter(|l| l.contains("Couldn't find schema")) {
        if !["ScaledObject", "TriggerAuthentication", "PodMonitor"]
            .iter()
            .any(|k| line.contains(&format!("kind {k} ")))
        {
            return Err(format!("{what}: no schema for a built-in kind: {line}"));
        }
    }
    let mut child = Command::new(tool("node"))
        .arg(repo().join("tests/support/crd_validate.js"))
        .env("TRACESIFT_NODE_MODULES", node_modules())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(rendered.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let crd = text(&out);
    if !out.status.success() {
        return Err(format!("CRD schemas on {what}:\n{crd}"));
    }
    let custom = docs(rendered)
        .iter()
        .filter(|d| {
            [
                "ScaledObject",
                "TriggerAuthentication",
                "PodMonitor",
                "ServiceMonitor",
            ]
            .contains(&str_of(&d["kind"]))
        })
        .count();
    let ok = crd.lines().filter(|l| l.starts_with("ok ")).count();
    if ok != custom {
        return Err(format!(
            "{what}: {custom} custom resources, {ok} validated against a CRD schema:\n{crd}"
        ));
    }
    Ok(())
}

/// The secret keys deploy/README.md tells users to put in `tracesift-secrets`.
fn documented_secret_keys() -> BTreeSet<String> {
    let readme = std::fs::read_to_string(repo().join("deploy/README.md")).unwrap();
    let re = regex::Regex::new(r"--from-literal=([A-Z0-9_]+)=").unwrap();
    let keys: BTreeSet<String> = re
        .captures_iter(&readme)
        .map(|c| c[1].to_string())
        .collect();
    assert!(
        !keys.is_empty(),
        "deploy/README.md shows no `kubectl create secret ... --from-literal=KEY=` command"
    );
    keys
}

/// The `${env:NAME}` references of a configuration.
fn env_refs(config: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}").unwrap();
    re.captures_iter(config).map(|c| c[1].to_string()).collect()
}

/// `tracesift check` on a configuration with every env reference set to a placeholder: its
/// memory formula (fixed, per partition) and its effective YAML.
fn check_config(dir: &Path, config: &str, topics: &str) -> ((u64, u64), Value) {
    let cfg = dir.join("config.yaml");
    std::fs::write(&cfg, config).unwrap();
    std::fs::write(dir.join("topics.yaml"), topics).unwrap();
    let placeholder = |name: &str| match name {
        "KAFKA_BROKERS" => "kafka-0.example.net:9093".to_string(),
        "ARCHIVE_BUCKET" => "traces-archive".to_string(),
        "S3_ENDPOINT" => "https://s3.example.net".to_string(),
        "S3_REGION" => "eu-west-1".to_string(),
        "POD_NAME" => "tracesift-0".to_string(),
        other => format!("placeholder-{}", other.to_lowercase()),
    };
    let mut cmd = Command::new(bin());
    cmd.args(["check", "--config"]).arg(&cfg);
    let mut topo = Command::new(bin());
    topo.args(["topology", "check", "--config"])
        .arg(&cfg)
        .arg("--topics")
        .arg(dir.join("topics.yaml"));
    for name in env_refs(config) {
        cmd.env(&name, placeholder(&name));
        topo.env(&name, placeholder(&name));
    }
    let out = run(&mut cmd);
    assert!(out.status.success(), "tracesift check: {}", text(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        !stdout.contains("placeholder-kafka_password"),
        "check printed a secret"
    );
    let re = regex::Regex::new(r"# memory bound: fixed (\d+) B \+ (\d+) B per partition").unwrap();
    let c = re.captures(&stdout).expect("check prints the memory bound");
    let out = run(&mut topo);
    assert!(
        out.status.success(),
        "tracesift topology check: {}",
        text(&out)
    );
    (
        (c[1].parse().unwrap(), c[2].parse().unwrap()),
        serde_norway::from_str(&stdout).unwrap(),
    )
}

/// The input topic's partition count in a topics file.
fn input_partitions(topics: &str) -> u64 {
    let t: Value = serde_norway::from_str(topics).unwrap();
    let input = t["topics"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|t| t["role"] == "input")
        .expect("an input topic");
    input["partitions"]
        .as_u64()
        .or_else(|| t["defaults"]["partitions"].as_u64())
        .unwrap()
}

/// Every flag of `args` is one the subcommand knows.
fn assert_args_known(args: &[String], what: &str) {
    let sub: Vec<&str> = args
        .iter()
        .take_while(|a| !a.starts_with('-'))
        .map(String::as_str)
        .collect();
    assert!(!sub.is_empty(), "{what}: no subcommand in {args:?}");
    let out = run(Command::new(bin()).args(&sub).arg("--help"));
    assert!(
        out.status.success(),
        "{what}: `tracesift {sub:?} --help`: {}",
        text(&out)
    );
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in args.iter().filter(|a| a.starts_with("--")) {
        assert!(
            help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
            "{what}: `tracesift {}` has no flag {flag}",
            sub.join(" ")
        );
    }
}

fn check_overlay(overlay: &str) {
    let rendered = render(overlay);
    validate(&rendered, overlay).unwrap();
    let d = docs(&rendered);
    let cm = kinds(&d, "ConfigMap")
        .find(|c| str_of(&c["metadata"]["name"]).starts_with("tracesift-config"))
        .expect("the tracesift-config ConfigMap");
    let (config, topics) = (
        str_of(&cm["data"]["config.yaml"]),
        str_of(&cm["data"]["topics.yaml"]),
    );
    let dir = tempfile::tempdir().unwrap();
    let ((fixed, per_partition), effective) = check_config(dir.path(), config, topics);
    let partitions = input_partitions(topics);
    let listen = str_of(&effective["telemetry"]["listen"]);
    let port: u64 = listen.rsplit(':').next().unwrap().parse().unwrap();
    let shutdown = humantime::parse_duration(str_of(&effective["shutdown_timeout"])).unwrap();
    let secrets = documented_secret_keys();

    // Every workload: known arguments, its configuration mounted where the arguments say, every
    // env reference of the configuration provided.
    let sts = kind(&d, "StatefulSet", "tracesift");
    let compactor = kind(&d, "Deployment", "tracesift-compactor");
    let job = kind(&d, "Job", "tracesift-topology");
    for (w, expect) in [(sts, "run"), (compactor, "compact"), (job, "topology")] {
        let what = format!(
            "{overlay}: {} {}",
            str_of(&w["kind"]),
            str_of(&w["metadata"]["name"])
        );
        let pod = &w["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        let args: Vec<String> = c["args"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|a| str_of(a).to_string())
            .collect();
        assert_eq!(args[0], expect, "{what}");
        assert_args_known(&args, &what);
        let config_path = &args[args.iter().position(|a| a == "--config").unwrap() + 1];
        let mount = c["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|m| config_path.starts_with(str_of(&m["mountPath"])))
            .unwrap_or_else(|| panic!("{what}: nothing mounted at {config_path}"));
        let volume = pod["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap();
        assert_eq!(
            volume["configMap"]["name"], cm["metadata"]["name"],
            "{what}: {config_path} comes from the configuration ConfigMap"
        );
        assert!(
            config_path.ends_with("/config.yaml"),
            "{what}: mounts config.yaml as {config_path}"
        );
        let env: BTreeSet<String> = c["env"]
            .as_sequence()
            .map(|e| e.iter().map(|e| str_of(&e["name"]).to_string()).collect())
            .unwrap_or_default();
        let from_secret = c["envFrom"].as_sequence().is_some_and(|e| {
            e.iter()
                .any(|e| e["secretRef"]["name"] == "tracesift-secrets")
        });
        assert!(
            from_secret,
            "{what}: takes its secrets from tracesift-secrets"
        );
        for name in env_refs(config) {
            assert!(
                env.contains(&name) || secrets.contains(&name),
                "{what}: ${{env:{name}}} is neither in the pod's env nor in the Secret deploy/README.md creates"
            );
        }
        let sc = &c["securityContext"];
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{what}");
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{what}");
        if expect != "topology" {
            let ports = c["ports"].as_sequence().unwrap();
            let metrics = ports.iter().find(|p| p["name"] == "metrics").unwrap();
            assert_eq!(
                metrics["containerPort"].as_u64(),
                Some(port),
                "{what}: the metrics port is telemetry.listen's"
            );
            assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz", "{what}");
            assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz", "{what}");
            let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
            assert!(
                Duration::from_secs(grace) > shutdown,
                "{what}: grace {grace} s within shutdown_timeout {shutdown:?}"
            );
        }
    }

    // The pipeline: static membership from the pod name, memory for its partitions.
    let pod = &sts["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(
        str_of(&effective["kafka"]["group_instance_id"]),
        "tracesift-0",
        "{overlay}: group_instance_id is the pod name"
    );
    let pod_name = c["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "POD_NAME")
        .expect("POD_NAME in the pipeline's env");
    assert_eq!(
        pod_name["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    let (min, max, scale_down) = if let Some(so) = kinds(&d, "ScaledObject").next() {
        assert_eq!(so["spec"]["scaleTargetRef"]["kind"], "StatefulSet");
        assert_eq!(so["spec"]["scaleTargetRef"]["name"], "tracesift");
        let trig = &so["spec"]["triggers"][0];
        assert_eq!(trig["type"], "kafka");
        assert_eq!(
            trig["metadata"]["consumerGroup"],
            effective["kafka"]["group_id"]
        );
        assert_eq!(
            trig["metadata"]["topic"], effective["kafka"]["input_topics"][0],
            "{overlay}: KEDA reads the input topic's lag"
        );
        (
            so["spec"]["minReplicaCount"].as_u64().unwrap(),
            so["spec"]["maxReplicaCount"].as_u64().unwrap(),
            so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
                ["stabilizationWindowSeconds"]
                .as_u64()
                .unwrap(),
        )
    } else {
        let hpa = kind(&d, "HorizontalPodAutoscaler", "tracesift");
        assert_eq!(hpa["spec"]["scaleTargetRef"]["kind"], "StatefulSet");
        assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "tracesift");
        (
            hpa["spec"]["minReplicas"].as_u64().unwrap(),
            hpa["spec"]["maxReplicas"].as_u64().unwrap(),
            hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"]
                .as_u64()
                .unwrap(),
        )
    };
    assert!(
        max <= partitions,
        "{overlay}: the autoscaler may go to {max} members, past {partitions} partitions"
    );
    assert!(min >= 2 && min <= max, "{overlay}: min {min}, max {max}");
    assert!(
        scale_down >= 300,
        "{overlay}: scale-down stabilisation {scale_down} s lets rebalances flap"
    );
    let per_pod = partitions.div_ceil(min);
    let bound = fixed + per_partition * per_pod;
    let res = &c["resources"];
    let limit = quantity(str_of(&res["limits"]["memory"]));
    assert_eq!(
        quantity(str_of(&res["requests"]["memory"])),
        limit,
        "{overlay}: memory request = limit"
    );
    assert!(
        limit >= bound,
        "{overlay}: memory limit {} MiB under the formula's {} MiB for {per_pod} partitions per pod",
        limit >> 20,
        bound >> 20
    );
    // The base StatefulSet's comment shows the formula's sum for the base configuration (the
    // small overlay keeps it): its numbers are the binary's.
    if overlay == "small" {
        let comment =
            std::fs::read_to_string(repo().join("deploy/k8s/base/statefulset.yaml")).unwrap();
        let sum = regex::Regex::new(r"(\d+) MiB \+ (\d+) x (\d+) MiB = (\d+) MiB").unwrap();
        let c = sum.captures(&comment).expect("the memory comment");
        let n = |i: usize| c[i].parse::<u64>().unwrap();
        const MIB: u64 = 1 << 20;
        assert_eq!(n(1), fixed / MIB, "the comment's fixed term");
        assert_eq!(
            n(3),
            (per_partition + MIB / 2) / MIB,
            "the comment's per-partition term"
        );
        assert_eq!(
            n(4),
            (fixed + n(2) * per_partition + MIB / 2) / MIB,
            "the comment's sum"
        );
    }
    let replicas = sts["spec"]["replicas"].as_u64().unwrap();
    assert!(
        (min..=max).contains(&replicas),
        "{overlay}: {replicas} replicas"
    );

    // Disruption budget, Service, PodMonitor and NetworkPolicy select the pods and the port.
    let labels = &sts["spec"]["template"]["metadata"]["labels"];
    let selects = |sel: &Value| {
        sel.as_mapping()
            .unwrap()
            .iter()
            .all(|(k, v)| &labels[k] == v)
    };
    let pdb = kind(&d, "PodDisruptionBudget", "tracesift");
    assert!(
        selects(&pdb["spec"]["selector"]["matchLabels"]),
        "{overlay}: PDB"
    );
    let svc = kind(&d, "Service", "tracesift");
    assert!(selects(&svc["spec"]["selector"]), "{overlay}: Service");
    assert_eq!(sts["spec"]["serviceName"], "tracesift");
    let pm = kind(&d, "PodMonitor", "tracesift");
    assert!(
        selects(&pm["spec"]["selector"]["matchLabels"]),
        "{overlay}: PodMonitor"
    );
    assert_eq!(pm["spec"]["podMetricsEndpoints"][0]["port"], "metrics");
    assert_eq!(pm["spec"]["podMetricsEndpoints"][0]["path"], "/metrics");
    let np = kind(&d, "NetworkPolicy", "tracesift");
    assert!(
        selects(&np["spec"]["podSelector"]["matchLabels"]),
        "{overlay}: NetworkPolicy"
    );
    let ingress_ports: Vec<u64> = np["spec"]["ingress"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|r| r["ports"].as_sequence().unwrap())
        .map(|p| p["port"].as_u64().unwrap())
        .collect();
    assert_eq!(
        ingress_ports,
        vec![port],
        "{overlay}: only metrics scraping comes in"
    );
}

#[test]
fn every_overlay_renders_validates_and_agrees_with_the_binary() {
    // One truth for the topics: the base ships topology/topics.yaml as it is.
    assert_eq!(
        std::fs::read_to_string(repo().join("deploy/k8s/base/topics.yaml")).unwrap(),
        std::fs::read_to_string(repo().join("topology/topics.yaml")).unwrap(),
        "deploy/k8s/base/topics.yaml differs from topology/topics.yaml"
    );
    let overlays: Vec<String> = std::fs::read_dir(repo().join("deploy/k8s/overlays"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(overlays.contains(&"small".into()) && overlays.contains(&"large".into()));
    for o in &overlays {
        check_overlay(o);
    }
}

#[test]
fn the_validators_reject_broken_manifests() {
    // The checks above can fail: an unknown field, a wrong type in a custom resource.
    let rendered = render("large");
    let unknown = rendered.replacen(
        "  serviceName: tracesift",
        "  serviceName: tracesift\n  replicass: 2",
        1,
    );
    assert_ne!(unknown, rendered);
    let e = validate(&unknown, "an unknown StatefulSet field").unwrap_err();
    assert!(e.contains("replicass"), "{e}");
    let wrong = rendered.replacen("minReplicaCount: 6", "minReplicaCount: six", 1);
    assert_ne!(wrong, rendered);
    let e = validate(&wrong, "a string minReplicaCount").unwrap_err();
    assert!(e.contains("minReplicaCount"), "{e}");
}

/// The alert rules: name → expression.
fn alerts() -> BTreeMap<String, String> {
    let y: Value = serde_norway::from_str(
        &std::fs::read_to_string(repo().join("deploy/prometheus/alerts.yaml")).unwrap(),
    )
    .unwrap();
    y["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap())
        .map(|r| {
            (
                str_of(&r["alert"]).to_string(),
                str_of(&r["expr"]).to_string(),
            )
        })
        .collect()
}

#[test]
fn every_alert_passes_promtool_fires_and_stays_silent_and_has_a_runbook() {
    let dir = repo().join("deploy/prometheus");
    let out = run(Command::new(tool("promtool"))
        .args(["check", "rules", "alerts.yaml"])
        .current_dir(&dir));
    assert!(out.status.success(), "promtool check rules: {}", text(&out));
    let out = run(Command::new(tool("promtool"))
        .args(["test", "rules", "alerts_test.yaml"])
        .current_dir(&dir));
    assert!(out.status.success(), "promtool test rules: {}", text(&out));

    let tests: Value =
        serde_norway::from_str(&std::fs::read_to_string(dir.join("alerts_test.yaml")).unwrap())
            .unwrap();
    let (mut fires, mut silent) = (BTreeSet::new(), BTreeSet::new());
    for t in tests["tests"].as_sequence().unwrap() {
        for a in t["alert_rule_test"].as_sequence().unwrap() {
            let name = str_of(&a["alertname"]).to_string();
            if a["exp_alerts"].as_sequence().unwrap().is_empty() {
                silent.insert(name);
            } else {
                fires.insert(name);
            }
        }
    }
    let runbook = std::fs::read_to_string(repo().join("deploy/README.md")).unwrap();
    for name in alerts().keys() {
        assert!(fires.contains(name), "no promtool test where {name} fires");
        assert!(
            silent.contains(name),
            "no promtool test where {name} stays silent"
        );
        assert!(
            runbook.contains(&format!("### {name}")),
            "deploy/README.md has no runbook section `### {name}`"
        );
    }
}

/// Every expression of a dashboard's panels (`deploy/grafana/FILE`).
fn dashboard_exprs(file: &str) -> Vec<(String, String)> {
    let d: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("deploy/grafana").join(file)).unwrap(),
    )
    .unwrap();
    d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] != "row")
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap().to_string();
            p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |t| (title.clone(), t["expr"].as_str().unwrap().to_string()))
        })
        .collect()
}

fn grafana_to_promql(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$service", ".*")
        .replace("$__interval", "15s")
        .replace("$__range", "1h")
}

/// The metric names `telemetry` declares.
fn exported_metrics() -> BTreeSet<String> {
    let src = std::fs::read_to_string(repo().join("src/telemetry.rs")).unwrap();
    // The metric catalog: `counter NAME = "tracesift_…", Unit,` (and any constant outside it).
    let re = regex::Regex::new(
        r#"(?:pub const [A-Z_]+: &str = |(?:counter|gauge|histogram) [A-Z_]+ = )"(tracesift_[a-z0-9_]+)""#,
    )
    .unwrap();
    re.captures_iter(&src).map(|c| c[1].to_string()).collect()
}

fn metric_names(expr: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"tracesift_[a-z0-9_]+").unwrap();
    re.find_iter(expr).map(|m| m.as_str().to_string()).collect()
}

#[test]
fn the_dashboard_reads_only_its_datasource_and_metrics_tracesift_exports() {
    let d: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("deploy/grafana/tracesift.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let vars = d["templating"]["list"].as_array().unwrap();
    assert_eq!(vars.len(), 1, "one template variable, the datasource");
    assert_eq!(vars[0]["type"], "datasource");
    assert_eq!(vars[0]["query"], "prometheus");
    let var = format!("${{{}}}", vars[0]["name"].as_str().unwrap());
    let exported = exported_metrics();
    let vars_in = regex::Regex::new(r"\$\{?[A-Za-z_]+").unwrap();
    let mut used = BTreeSet::new();
    for p in d["panels"].as_array().unwrap() {
        if p["type"] == "row" {
            continue;
        }
        let title = p["title"].as_str().unwrap();
        assert_eq!(p["datasource"]["type"], "prometheus", "{title}");
        assert_eq!(p["datasource"]["uid"], var.as_str(), "{title}");
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], var.as_str(), "{title}");
            let expr = t["expr"].as_str().unwrap();
            for v in vars_in.find_iter(expr) {
                assert!(
                    ["$__rate_interval", "$__interval", "$__range"].contains(&v.as_str()),
                    "{title}: `{}` is not the datasource or a Grafana interval",
                    v.as_str()
                );
            }
            for m in metric_names(expr) {
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| m.strip_suffix(s))
                    .filter(|b| exported.contains(*b))
                    .unwrap_or(&m);
                assert!(
                    exported.contains(base),
                    "{title}: `{m}` is not a metric telemetry exports"
                );
                used.insert(base.to_string());
            }
        }
    }
    for (name, expr) in alerts() {
        for m in metric_names(&expr) {
            let base = m.strip_suffix("_bucket").unwrap_or(&m);
            assert!(
                exported.contains(base),
                "alert {name}: `{m}` is not exported"
            );
        }
    }
    // The questions operators ask (the issue's list) each have a panel.
    for m in [
        "tracesift_spans_in_total",
        "tracesift_spans_out_total",
        "tracesift_committed_offset_lag",
        "tracesift_traces_decided_total",
        "tracesift_forced_decisions_total",
        "tracesift_late_spans_total",
        "tracesift_dead_letter_records_total",
        "tracesift_traces_buffered",
        "tracesift_bytes_buffered",
        "tracesift_store_max_bytes",
        "tracesift_process_resident_memory_bytes",
        "tracesift_memory_bound_bytes",
        "tracesift_queue_wait_seconds",
        "tracesift_decision_delay_seconds",
        "tracesift_sink_write_seconds",
        "tracesift_end_to_end_seconds",
        "tracesift_sink_breaker_state",
        "tracesift_decision_restore_seconds",
        "tracesift_archive_tier_bytes",
        "tracesift_compaction_runs_total",
    ] {
        assert!(used.contains(m), "no dashboard panel shows {m}");
    }
}

/// Metric names the span metrics and the service graph write with their default settings, as
/// the library renders them.
fn derived_metrics() -> BTreeSet<String> {
    use tracesift::telemetry::exposition::{Format, Writer};
    use tracesift::telemetry::service_graph::{EdgeObs, ServiceGraph, ServiceGraphConfig};
    use tracesift::telemetry::span_metrics::{SpanMetrics, SpanMetricsConfig};
    let mut spans = SpanMetrics::new(SpanMetricsConfig::default().settings());
    spans.observe(&["a", "b", "c", "d"], 1, 1);
    let mut graph = ServiceGraph::new(ServiceGraphConfig::default().settings(None));
    let edge = EdgeObs {
        client: "a".into(),
        server: "b".into(),
        connection_type: "",
        failed: false,
        client_side: Some((0.1, [1; 8])),
        server_side: Some((0.1, [2; 8])),
    };
    graph.observe(&edge, None, 1);
    let mut text = String::new();
    let mut w = Writer::new(&mut text, Format::Prometheus);
    spans.write(&mut w);
    graph.write(&mut w);
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn the_red_dashboard_reads_its_variables_and_metrics_the_span_metrics_write() {
    let d: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("deploy/grafana/tracesift-red.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let vars = d["templating"]["list"].as_array().unwrap();
    let names: Vec<&str> = vars.iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["datasource", "service"]);
    assert_eq!(vars[0]["type"], "datasource");
    let mut known = derived_metrics();
    known.extend(exported_metrics());
    assert!(
        known.contains("traces_span_metrics_calls_total"),
        "{known:?}"
    );
    let any_metric = regex::Regex::new(r"\b(?:traces|tracesift)_[a-z0-9_]+").unwrap();
    let mut kinds = BTreeSet::new();
    let mut used = BTreeSet::new();
    for p in d["panels"].as_array().unwrap() {
        if p["type"] == "row" {
            continue;
        }
        let title = p["title"].as_str().unwrap();
        kinds.insert(p["type"].as_str().unwrap().to_string());
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            for m in any_metric.find_iter(expr) {
                let m = m.as_str();
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| m.strip_suffix(s))
                    .unwrap_or(m);
                assert!(
                    known.contains(base) || known.contains(m),
                    "{title}: `{m}` is not a metric tracesift writes"
                );
                used.insert(base.to_string());
            }
            if expr.contains("histogram_quantile") {
                assert_eq!(
                    t["exemplar"], true,
                    "{title}: latency panels show exemplars"
                );
            }
        }
    }
    assert!(kinds.contains("nodeGraph"), "a node graph of the services");
    for m in [
        "traces_span_metrics_calls_total",
        "traces_span_metrics_duration_seconds",
        "traces_service_graph_request_total",
        "traces_service_graph_request_failed_total",
        "traces_service_graph_request_server_seconds",
        "tracesift_sampled_span_calls_estimated_total",
        "tracesift_span_metrics_overflow_spans_total",
    ] {
        assert!(used.contains(m), "no panel shows {m}");
    }
}

#[test]
fn the_systemd_units_verify_with_the_real_binary() {
    for unit in ["tracesift.service", "tracesift-compactor.service"] {
        let text_of = std::fs::read_to_string(repo().join("deploy/systemd").join(unit)).unwrap();
        let exec: Vec<&str> = text_of
            .lines()
            .filter_map(|l| l.strip_prefix("ExecStart="))
            .collect();
        assert_eq!(exec.len(), 1, "{unit}: one ExecStart");
        let mut words = exec[0].split_whitespace();
        assert_eq!(words.next(), Some("/usr/local/bin/tracesift"), "{unit}");
        let args: Vec<String> = words.map(String::from).collect();
        assert_args_known(&args, unit);
        // The binary at the unit's path, and no environment file: what verify can check here.
        let dir = tempfile::tempdir().unwrap();
        let local = text_of
            .replace("/usr/local/bin/tracesift", bin())
            .replace("EnvironmentFile=/etc/", "EnvironmentFile=-/etc/");
        let path = dir.path().join(unit);
        std::fs::write(&path, local).unwrap();
        let out = run(Command::new(tool("systemd-analyze"))
            .arg("verify")
            .arg(&path));
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "systemd-analyze verify {unit}: {}",
            text(&out)
        );
        let out = run(Command::new(tool("systemd-analyze"))
            .args(["security", "--offline=yes", "--threshold=30"])
            .arg(&path));
        assert!(
            out.status.success(),
            "{unit}: exposure above 3.0 of systemd-analyze security: {}",
            text(&out)
        );
    }
    // Both units on one host: the compactor's metrics beside the member's.
    let c =
        std::fs::read_to_string(repo().join("deploy/systemd/tracesift-compactor.service")).unwrap();
    assert!(
        c.contains("--listen"),
        "the compactor unit serves metrics on its own port"
    );
}

/// The operands of an alert expression whose series the rule compares: split at top-level
/// `and` / `or` / `unless`, and a trailing comparison with a number removed.
fn signals(expr: &str) -> Vec<String> {
    let expr = expr.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'(' | b'{' | b'[' => depth += 1,
            b')' | b'}' | b']' => depth -= 1,
            _ if depth == 0 => {
                for op in [" and ", " or ", " unless "] {
                    if expr[i..].starts_with(op) {
                        parts.push(expr[start..i].to_string());
                        start = i + op.len();
                        i = start - 1;
                        break;
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    parts.push(expr[start..].to_string());
    let cmp = regex::Regex::new(r"\s*(>=|<=|==|!=|>|<)\s*[0-9.e+]+\s*$").unwrap();
    parts
        .into_iter()
        .map(|p| cmp.replace(&p, "").trim().to_string())
        .collect()
}

#[test]
fn alert_signals_are_the_operands() {
    assert_eq!(
        signals("sum by (topic) (x) > 100000\n and sum(deriv(y[15m])) > 0"),
        vec!["sum by (topic) (x)", "sum(deriv(y[15m]))"]
    );
    assert_eq!(signals("a{le=\"60\"} / b >= 3"), vec!["a{le=\"60\"} / b"]);
}

async fn prom_query(client: &reqwest::Client, base: &str, q: &str) -> serde_json::Value {
    try_query(client, base, q)
        .await
        .unwrap_or_else(|e| panic!("query `{q}`: {e}"))
}

async fn try_query(
    client: &reqwest::Client,
    base: &str,
    q: &str,
) -> Result<serde_json::Value, String> {
    let url = format!("{base}/api/v1/query?query={}", urlencode(q));
    let r = client.get(&url).send().await.map_err(|e| e.to_string())?;
    let t = r.text().await.map_err(|e| e.to_string())?;
    serde_json::from_str(&t).map_err(|e| format!("{e}: {t}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_returns_series_for_every_dashboard_and_alert_expression() {
    let prometheus = tool("prometheus");
    let broker = support::Broker::start();
    let brokers = broker.brokers.clone();
    support::create_topic(&brokers, "otlp_spans", 2).await;
    let dir = tempfile::tempdir().unwrap();
    let hot = dir.path().join("hot");
    std::fs::create_dir_all(&hot).unwrap();
    let (member_port, compactor_port, prom_port) = (
        support::free_port(),
        support::free_port(),
        support::free_port(),
    );
    let config = format!(
        r#"
kafka: {{brokers: "{brokers}", create_topics: true, group_id: ops, commit_interval: 200ms}}
store: {{decision_wait: 1s, decision_wait_after_root: 500ms, tick: 50ms}}
policies:
  - {{name: errors, type: status_code, status_code: {{status_codes: [ERROR]}}}}
  - {{name: some, type: probabilistic, probabilistic: {{sampling_percentage: 30}}}}
archive:
  hot: {{url: "file://{}", flush_interval: 1s}}
  compaction: {{min_age: 1s}}
telemetry:
  listen: "127.0.0.1:{member_port}"
  span_metrics: {{enabled: true}}
  service_graph: {{enabled: true}}
"#,
        hot.display()
    );
    let member = support::Member::start(dir.path(), "member", &config, &[]);
    let cfg = dir.path().join("member.yaml");
    let compactor = Proc(
        Command::new(bin())
            .args(["compact", "--config"])
            .arg(&cfg)
            .args(["--every", "2s", "--listen"])
            .arg(format!("127.0.0.1:{compactor_port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("compactor.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let gen = run(Command::new(bin()).args([
        "gen",
        "--brokers",
        &brokers,
        "--topic",
        "otlp_spans",
        "--traces",
        "3000",
        "--rate",
        "300",
    ]));
    assert!(gen.status.success(), "gen: {}", text(&gen));
    // One malformed record: the dead-letter path shows.
    let producer: rdkafka::producer::FutureProducer = support::client(&brokers).create().unwrap();
    let mut ends = BTreeMap::new();
    support::send_record(
        &producer,
        "00000000000000000000000000000001",
        b"\xff\xff not protobuf",
        None,
        &mut ends,
    )
    .await;

    let prom_dir = dir.path().join("prometheus");
    std::fs::create_dir_all(&prom_dir).unwrap();
    let prom_cfg = prom_dir.join("prometheus.yml");
    std::fs::write(
        &prom_cfg,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nrule_files: [\"{}\"]\nscrape_configs:\n  - job_name: tracesift\n    static_configs:\n      - targets: [\"127.0.0.1:{member_port}\", \"127.0.0.1:{compactor_port}\"]\n",
            repo().join("deploy/prometheus/alerts.yaml").display()
        ),
    )
    .unwrap();
    let mut prom = Proc(
        Command::new(&prometheus)
            .arg(format!("--config.file={}", prom_cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                prom_dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(prom_dir.join("prometheus.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{prom_port}");
    let client = reqwest::Client::new();

    // Until both targets are scraped, traces were decided, kept ones written and a pass ran.
    let ready = [
        "sum(tracesift_traces_decided_total) > 0",
        "sum(tracesift_spans_out_total{sink=\"parquet\"}) > 0",
        "tracesift_compaction_last_success_timestamp_seconds",
        "sum(tracesift_dead_letter_records_total) > 0",
        "count(up == 1) == 2",
    ];
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let mut missing = Vec::new();
        for q in ready {
            let r = try_query(&client, &base, q).await.unwrap_or_default();
            if r["data"]["result"].as_array().is_none_or(|a| a.is_empty()) {
                missing.push(q);
            }
        }
        if missing.is_empty() {
            break;
        }
        if let Some(status) = prom.0.try_wait().unwrap() {
            panic!(
                "prometheus exited ({status}):\n{}",
                std::fs::read_to_string(prom_dir.join("prometheus.log")).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "still missing {missing:?}\nmember log:\n{}\nprometheus log:\n{}",
            member.log(),
            std::fs::read_to_string(prom_dir.join("prometheus.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // A few more scrapes, so every 1m rate window holds two samples after the traffic.
    tokio::time::sleep(Duration::from_secs(5)).await;

    // The alert rules loaded and evaluate without error.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r: serde_json::Value = client
            .get(format!("{base}/api/v1/rules"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .map(|t| serde_json::from_str(&t).unwrap())
            .unwrap();
        let rules: Vec<&serde_json::Value> = r["data"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap())
            .collect();
        assert_eq!(rules.len(), alerts().len(), "rules loaded: {r}");
        let bad: Vec<String> = rules
            .iter()
            .filter(|r| r["health"] != "ok")
            .map(|r| format!("{} {} {}", r["name"], r["health"], r["lastError"]))
            .collect();
        if bad.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "rules not healthy: {bad:?}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // Every dashboard expression and every alert's compared series return series.
    let mut queries: Vec<(String, String)> = dashboard_exprs("tracesift.json")
        .into_iter()
        .chain(dashboard_exprs("tracesift-red.json"))
        .map(|(t, e)| (format!("panel {t}"), grafana_to_promql(&e)))
        .collect();
    for (name, expr) in alerts() {
        for s in signals(&expr) {
            queries.push((format!("alert {name}"), s));
        }
    }
    let mut empty = Vec::new();
    for (what, q) in &queries {
        let r = prom_query(&client, &base, q).await;
        assert_eq!(r["status"], "success", "{what}: `{q}`: {r}");
        if r["data"]["result"].as_array().is_none_or(|a| a.is_empty()) {
            empty.push(format!("{what}: `{q}`"));
        }
    }
    assert!(
        empty.is_empty(),
        "{} of {} expressions return no series:\n{}",
        empty.len(),
        queries.len(),
        empty.join("\n")
    );
    drop(compactor);
    member.stop();
}

#[test]
fn the_systemd_install_steps_let_the_services_user_read_its_configuration() {
    // The README's install block, as an operator runs it, into a scratch root.
    let readme = std::fs::read_to_string(repo().join("deploy/README.md")).unwrap();
    let block = readme
        .split("## VMs with systemd")
        .nth(1)
        .and_then(|s| s.split("```sh").nth(1))
        .and_then(|s| s.split("```").next())
        .unwrap();
    let mode = |line: &str| -> u32 {
        let m = line
            .split("-m ")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap();
        u32::from_str_radix(m, 8).unwrap()
    };
    let dir_line = block
        .lines()
        .find(|l| l.starts_with("install -d") && l.contains("/etc/tracesift"))
        .unwrap();
    let file_line = block
        .lines()
        .find(|l| l.contains("config.yaml") && l.starts_with("install -m"))
        .unwrap();
    let root = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let etc = root.path().join("etc/tracesift");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::set_permissions(
        root.path().join("etc"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::set_permissions(&etc, std::fs::Permissions::from_mode(mode(dir_line))).unwrap();
    let cfg = etc.join("config.yaml");
    std::fs::write(
        &cfg,
        "kafka: {brokers: \"127.0.0.1:9092\"}\npolicies: [{name: all, type: always_sample}]\n",
    )
    .unwrap();
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(mode(file_line))).unwrap();
    // `check` as an unprivileged uid (the unit's DynamicUser is one), as ExecStartPre runs it.
    let out = run(Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            bin(),
            "check",
            "--config",
        ])
        .arg(&cfg));
    assert!(
        out.status.success(),
        "check as an unprivileged user: {}",
        text(&out)
    );
}

#[test]
fn every_setting_a_comment_in_deploy_or_topology_names_exists() {
    // The effective configuration with every default (and both optional blocks) shown.
    let cfg =
        tracesift::config::Config::parse("policies: [{name: all, type: always_sample}]\n").unwrap();
    let effective: Value = serde_norway::from_str(&cfg.to_yaml()).unwrap();
    let names = regex::Regex::new(r"\b(kafka|store|sinks|archive|telemetry)(\.[a-z_]+)+").unwrap();
    let mut files = Vec::new();
    for dir in ["deploy", "topology"] {
        let mut stack = vec![repo().join(dir)];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p
                    .extension()
                    .is_some_and(|x| x == "yaml" || x == "yml" || x == "service")
                {
                    files.push(p);
                }
            }
        }
    }
    let mut missing = Vec::new();
    let mut seen = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for line in text.lines() {
            let Some((_, comment)) = line.split_once('#') else {
                continue;
            };
            for m in names.find_iter(comment) {
                seen += 1;
                let mut v = &effective;
                let mut ok = true;
                for part in m.as_str().split('.') {
                    match v.get(part) {
                        Some(next) => v = next,
                        None => {
                            ok = false;
                            break;
                        }
                    }
                }
                if !ok {
                    missing.push(format!("{}: `{}`", f.display(), m.as_str()));
                }
            }
        }
    }
    assert!(
        seen > 10,
        "only {seen} settings named in comments: is the pattern right?"
    );
    assert!(
        missing.is_empty(),
        "comments name settings that do not exist:\n{}",
        missing.join("\n")
    );
}
