#!/usr/bin/env bash
# End-to-end throughput against a real broker: starts tansu (sqlite storage) on a free loopback
# port in a temporary directory (TANSU_STORAGE=memory://tansu/ for the in-memory engine), runs `tracesift bench` against it, and stops it.
#
#   ./deploy/local/bench.sh                       # 100k traces, 2 partitions, sampled topic +
#                                                 # Parquet + OTLP/HTTP + OTLP/gRPC
#   ./deploy/local/bench.sh --traces 20000 --split
#   BENCH_OTLP=0 ./deploy/local/bench.sh          # without the OTLP sinks
#   ./deploy/local/bench.sh cost                  # what a span costs: core-seconds per 1M spans
#                                                 # per configuration, idle CPU, RSS per span
#
# The OTLP sinks export to the tests' receiver (tests/support/otlp_receiver.py: the official
# proto types and grpcio) on loopback. Arguments are passed to `tracesift bench`. The hot-path
# micro benchmarks are `cargo bench`.
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/local/tools.sh

cargo build --release --locked
DATA="$(mktemp -d)"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
URL="tcp://127.0.0.1:$PORT"
( cd "$DATA" && exec "$TRACESIFT_TANSU" broker --listener-url "$URL" --advertised-listener-url "$URL" \
    --storage-engine "${TANSU_STORAGE:-sqlite://tansu.db}" >tansu.log 2>&1 ) &
TANSU_PID=$!
RX_PID=""
trap 'kill $TANSU_PID $RX_PID 2>/dev/null; wait $TANSU_PID 2>/dev/null; rm -rf "$DATA"' EXIT
OTLP_ARGS=()
if [ "${BENCH_OTLP:-1}" = 1 ] && [ "${1:-}" != cost ]; then
  mkfifo "$DATA/rx.in"
  "$TRACESIFT_PYTHON" tests/support/otlp_receiver.py "$DATA/otlp.jsonl" --quiet <"$DATA/rx.in" >"$DATA/rx.out" &
  RX_PID=$!
  exec 9>"$DATA/rx.in"   # its stdin stays open until this script ends
  for _ in $(seq 100); do grep -q READY "$DATA/rx.out" 2>/dev/null && break; sleep 0.1; done
  RX_HTTP="$(sed -n 's/.*http=\([0-9]*\).*/\1/p' "$DATA/rx.out")"
  RX_GRPC="$(sed -n 's/.* grpc=\([0-9]*\).*/\1/p' "$DATA/rx.out")"
  OTLP_ARGS=(--otlp-http "http://127.0.0.1:$RX_HTTP" --otlp-grpc "127.0.0.1:$RX_GRPC")
fi
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.1
done
if [ "${1:-}" = cost ]; then
  shift
  step "tracesift bench-cost against tansu at 127.0.0.1:$PORT"
  ./target/release/tracesift bench-cost --brokers "127.0.0.1:$PORT" "$@"
  exit 0
fi
step "tracesift bench against tansu at 127.0.0.1:$PORT"
./target/release/tracesift bench --brokers "127.0.0.1:$PORT" "${OTLP_ARGS[@]}" "$@"
