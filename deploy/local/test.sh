#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need on first use (see
# tools.sh), then checks formatting and lints and runs every test. Integration tests start their
# own tansu broker on a free loopback port and stop it when done.
set -euo pipefail
cd "$(dirname "$0")/../.."

step() { printf '\n==> %s\n' "$*"; }

step "format"
cargo fmt --all -- --check

source deploy/local/tools.sh

step "lints"
cargo clippy --all-targets --locked --features failpoints -- -D warnings

step "dependencies: licences and duplicate major versions (deny.toml; advisories need a network)"
"$TRACESIFT_CARGO_DENY" deny --offline check licenses bans

step "tests (unit, integration against tansu, analytics engines reading our Parquet)"
cargo test --locked --features failpoints --lib --bins --tests -- --test-threads=2
cargo test --locked --features failpoints --doc

step "benches, run once each as tests (figures: cargo bench, ./deploy/local/bench.sh)"
cargo test --locked --features failpoints --benches
