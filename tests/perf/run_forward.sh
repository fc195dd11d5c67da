#!/usr/bin/env bash
# Port forwarding throughput: iperf3 through `tunnel forward -L` over the direct path and over
# the relay path beside `ssh -L` (default cipher and aes128-gcm), 1 and 8 streams; the relay's
# bytes during a 1 GB direct transfer; `tunnel ping` direct vs relay vs raw UDP. One run.
# Usage: tests/perf/run_forward.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v iperf3 >/dev/null || { echo "needs iperf3: apt-get install iperf3" >&2; exit 2; }
[ -x /usr/sbin/sshd ] || { echo "needs sshd: apt-get install openssh-server" >&2; exit 2; }
cargo build --release --bins -q
cargo bench -q -p tunnel-tests --bench forward -- "$@"
