#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need on first use, then runs
# every test. Installed tools are cached under ${TRACESIFT_CACHE:-~/.cache/tracesift} and reused.
#
#   tansu 0.6.0 (Kafka-protocol broker, built from crates.io with its storage engines; 8-20 min once)
#   a Python venv with duckdb and pyarrow (the analytics engines that read our Parquet)
#
# Integration tests start their own broker on a free loopback port and stop it when done.
set -euo pipefail
cd "$(dirname "$0")/../.."

CACHE="${TRACESIFT_CACHE:-$HOME/.cache/tracesift}"
TANSU_VERSION=0.6.0
TANSU_ROOT="$CACHE/tools/tansu-$TANSU_VERSION"
TANSU_BIN="$TANSU_ROOT/bin/tansu"
VENV="$CACHE/venv"
mkdir -p "$CACHE/tools"

step() { printf '\n==> %s\n' "$*"; }

if [ -x "$TANSU_BIN" ] && "$TANSU_BIN" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
  step "tansu $TANSU_VERSION: cached at $TANSU_BIN"
else
  step "tansu $TANSU_VERSION: building from crates.io (first run only, 8-20 min)"
  cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore,libsql --root "$TANSU_ROOT"
fi

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import duckdb, pyarrow' 2>/dev/null; then
  step "python venv with duckdb + pyarrow: cached at $VENV"
else
  step "python venv with duckdb + pyarrow: installing from PyPI"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check duckdb pyarrow
fi

export TRACESIFT_TANSU="$TANSU_BIN"
export TRACESIFT_PYTHON="$VENV/bin/python"

step "format and lints"
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings

step "tests (unit, integration against tansu, analytics engines reading our Parquet)"
cargo test --locked --all-targets -- --test-threads=2
