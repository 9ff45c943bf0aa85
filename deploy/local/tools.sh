# Sourced by test.sh and bench.sh: installs on first use what the tests and benchmarks need, and
# exports where it is. Installed tools are cached under ${TRACESIFT_CACHE:-~/.cache/tracesift}.
#
#   tansu 0.6.0 (Kafka-protocol broker, built from crates.io with its storage engines; 8-20 min once)
#   garage 2.5.0 (S3-compatible object store for the tier tests, built from crates.io; ~7 min once)
#   cargo-deny 0.20.2 (licences and duplicate versions of the dependency graph; ~8 min once)
#   a Python venv with the analytics engines that read our Parquet in the engine matrix
#     (duckdb, pyarrow, datafusion, polars, chdb = ClickHouse in-process, pyspark) and
#     confluent-kafka (a second Kafka client: producers with every codec)
#   a Java runtime (17+) for pyspark
#   Debian packages: libssl-dev and pkg-config (rdkafka is built with TLS), bsdutils (`script`:
#     a pseudo-terminal for the progress-line test), openssl (test
#     certificates) and stunnel4 (a TLS terminator in front of the test broker); for the deploy
#     tests: prometheus (the server and promtool), kubectl (kustomize), systemd (systemd-analyze),
#     nodejs and npm (the published KEDA and Prometheus Operator CRD schemas, as compiled
#     validators from npm: @kubernetes-models/keda and /prometheus-operator)
#   kubernetes-validate (PyPI) for the Kubernetes schemas, offline

CACHE="${TRACESIFT_CACHE:-$HOME/.cache/tracesift}"
TANSU_VERSION=0.6.0
TANSU_ROOT="$CACHE/tools/tansu-$TANSU_VERSION"
TANSU_BIN="$TANSU_ROOT/bin/tansu"
VENV="$CACHE/venv"
mkdir -p "$CACHE/tools"

need_apt=()
pkg-config --exists openssl 2>/dev/null || need_apt+=(libssl-dev pkg-config)
command -v openssl >/dev/null || need_apt+=(openssl)
command -v script >/dev/null || need_apt+=(bsdutils)
command -v stunnel4 >/dev/null || command -v stunnel >/dev/null || need_apt+=(stunnel4)
command -v java >/dev/null || need_apt+=(openjdk-17-jre-headless)
command -v promtool >/dev/null && command -v prometheus >/dev/null || need_apt+=(prometheus)
command -v kubectl >/dev/null || need_apt+=(kubectl)
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
command -v node >/dev/null && command -v npm >/dev/null || need_apt+=(nodejs npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  printf '\n==> Debian packages: %s\n' "${need_apt[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need_apt[@]}"
fi

step() { printf '\n==> %s\n' "$*"; }

if [ -x "$TANSU_BIN" ] && "$TANSU_BIN" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
  step "tansu $TANSU_VERSION: cached at $TANSU_BIN"
else
  step "tansu $TANSU_VERSION: building from crates.io (first run only, 8-20 min)"
  cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore,libsql --root "$TANSU_ROOT"
fi

GARAGE_VERSION=2.5.0
GARAGE_ROOT="$CACHE/tools/garage-$GARAGE_VERSION"
GARAGE_BIN="$GARAGE_ROOT/bin/garage"
if [ -x "$GARAGE_BIN" ] && "$GARAGE_BIN" --version 2>/dev/null | grep -q "$GARAGE_VERSION"; then
  step "garage $GARAGE_VERSION: cached at $GARAGE_BIN"
else
  step "garage $GARAGE_VERSION: building from crates.io (first run only, ~7 min)"
  cargo install garage --version "$GARAGE_VERSION" --locked --root "$GARAGE_ROOT"
fi

# cargo-deny: the licence and duplicate-version checks of the test command (`cargo deny check
# licenses bans`, deny.toml). Its advisories check needs the RustSec database from GitHub, which
# these machines cannot reach, so the test command does not run it.
DENY_VERSION=0.20.2
DENY_ROOT="$CACHE/tools/cargo-deny-$DENY_VERSION"
DENY_BIN="$DENY_ROOT/bin/cargo-deny"
if [ -x "$DENY_BIN" ] && "$DENY_BIN" --version 2>/dev/null | grep -q "$DENY_VERSION"; then
  step "cargo-deny $DENY_VERSION: cached at $DENY_BIN"
else
  step "cargo-deny $DENY_VERSION: building from crates.io (first run only, ~8 min)"
  cargo install cargo-deny --version "$DENY_VERSION" --locked --root "$DENY_ROOT"
fi

PY_PACKAGES=(duckdb pyarrow datafusion polars chdb pyspark confluent-kafka grpcio grpcio-status opentelemetry-proto kubernetes-validate)
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import duckdb, pyarrow, datafusion, polars, chdb, pyspark, confluent_kafka, grpc, google.rpc.error_details_pb2, opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc, kubernetes_validate' 2>/dev/null; then
  step "python venv with ${PY_PACKAGES[*]}: cached at $VENV"
else
  step "python venv with ${PY_PACKAGES[*]}: installing from PyPI (~2 min once)"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  # opentelemetry-proto: the official OTLP types, for the tests' OTLP receiver (an independent
  # decoder); grpcio serves its gRPC side.
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PY_PACKAGES[@]}"
fi

NPM_DIR="$CACHE/npm"
# Versions that load as CommonJS on Debian's Node.js 20 (newer @kubernetes-models need Node 22).
NPM_PACKAGES=(@kubernetes-models/keda@0.4.2 @kubernetes-models/prometheus-operator@6.0.0 js-yaml@4.1.0)
if [ "$(cat "$NPM_DIR/.installed" 2>/dev/null)" = "${NPM_PACKAGES[*]}" ]; then
  step "CRD schemas (npm ${NPM_PACKAGES[*]}): cached at $NPM_DIR"
else
  step "CRD schemas (npm ${NPM_PACKAGES[*]}): installing (first run only)"
  rm -rf "$NPM_DIR" && mkdir -p "$NPM_DIR"
  npm install --prefix "$NPM_DIR" --no-audit --no-fund --loglevel=error "${NPM_PACKAGES[@]}"
  echo "${NPM_PACKAGES[*]}" > "$NPM_DIR/.installed"
fi

export TRACESIFT_TANSU="$TANSU_BIN"
export TRACESIFT_NODE_MODULES="$NPM_DIR/node_modules"
export TRACESIFT_GARAGE="$GARAGE_BIN"
export TRACESIFT_PYTHON="$VENV/bin/python"
export TRACESIFT_CARGO_DENY="$DENY_BIN"
