#!/usr/bin/env bash
# Fleet benchmarks: `fleet exec all -- true` over 1,000 in-process peers (wall time to the
# reduced answer, relay RSS, beside a local spawn floor), and a 200 MiB word count over 8
# peers beside `tr -s ' ' '\n' | sort | uniq -c` in the same run.
# Usage: tests/perf/run_fleet.sh [exec] [wordcount]
set -euo pipefail
cd "$(dirname "$0")/../.."
# 1,000 peers need 1,000 sockets on each side.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cargo build --release --bins -q
cargo bench -q -p tunnel-tests --bench fleet -- "$@"
