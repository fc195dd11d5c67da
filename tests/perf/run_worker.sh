#!/usr/bin/env bash
# The Worker relay under workerd beside tunnel-relay: RTT p50/p99 between two nodes, 64 KiB
# frame throughput, memory per idle connection at 1,000. One run.
# Usage: tests/perf/run_worker.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
[ -x worker/node_modules/@cloudflare/workerd-linux-64/bin/workerd ] || (cd worker && npm ci --no-audit --no-fund)
cargo build --release --bins -q
cargo bench -q -p tunnel-tests --bench worker_relay -- "$@"
