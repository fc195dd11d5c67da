#!/usr/bin/env bash
# Foundation benchmarks: RTT through the relay (next to a raw TCP floor), relay memory per idle
# peer at 1,000 and 10,000 peers, and relay forwarding rate. Prints every figure.
# Usage: tests/perf/run.sh [rtt] [memory] [forward]
set -euo pipefail
cd "$(dirname "$0")/../.."
# 10,000 peers need 10,000 sockets on each side.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cargo build --release --bins -q
cargo bench -q -p tunnel-tests --bench mesh -- "$@"
