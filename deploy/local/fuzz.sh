#!/usr/bin/env bash
# Coverage-guided fuzzing of every decoder entry (cargo-fuzz / libFuzzer, nightly toolchain).
#
#   deploy/local/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Targets (fuzz/fuzz_targets/): scan (protobuf scanner), json (OTLP/JSON decoder), encode
# (request chunker, splicer, marker, Parquet encoder), tree (span-tree renderer), ottl (OTTL
# condition parser, printer, compiler and evaluator). Default: 300 s
# each, all five. Seeds come from tests/fixtures/hostile/; findings land in
# fuzz/artifacts/<target>/ (add a minimized one to tests/fixtures/hostile/ as refused-* or
# accepted-* so the normal suite keeps it). cargo-fuzz is installed on first use under
# ${TRACESIFT_CACHE:-~/.cache/tracesift}; the nightly toolchain must be installed (rustup).
set -euo pipefail
cd "$(dirname "$0")/../.."
CACHE="${TRACESIFT_CACHE:-$HOME/.cache/tracesift}"
FUZZ_ROOT="$CACHE/tools/cargo-fuzz"
if ! [ -x "$FUZZ_ROOT/bin/cargo-fuzz" ]; then
  echo "==> cargo-fuzz: installing from crates.io (first run only)"
  cargo install cargo-fuzz --version 0.13.2 --locked --root "$FUZZ_ROOT"
fi
export PATH="$FUZZ_ROOT/bin:$PATH"
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzzing needs the nightly toolchain: rustup toolchain install nightly" >&2
  exit 1
fi
SECS="${1:-300}"
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(scan json encode tree ottl)
for t in "${TARGETS[@]}"; do
  corpus="fuzz/corpus/$t"
  mkdir -p "$corpus"
  cp -n tests/fixtures/hostile/* "$corpus"/ 2>/dev/null || true
  echo "==> fuzzing $t for ${SECS}s"
  cargo +nightly fuzz run --sanitizer none "$t" "$corpus" -- -max_total_time="$SECS" -rss_limit_mb=4096 2>&1 \
    | tee "fuzz/$t.log" | grep -E "^#[0-9]+ +(DONE|pulse)|ERROR|panicked|SUMMARY" || true
  if grep -q "SUMMARY\|panicked" "fuzz/$t.log"; then
    echo "==> $t: FOUND A FAILURE, see fuzz/$t.log and fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
echo "==> no failures"
