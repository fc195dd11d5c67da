#!/usr/bin/env bash
# SSH benchmarks: fan-out of `uname -a` to 200 targets on 8 OpenSSH sshd, tunnel (cold and
# warm) beside parallel-ssh, Ansible ad-hoc and asyncssh; and 10,000 targets on an in-process
# russh fixture (tunnel's time and peak RSS beside asyncssh's).
# Usage: tests/perf/run_ssh.sh [fanout] [scale]
set -euo pipefail
cd "$(dirname "$0")/../.."
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
command -v parallel-ssh >/dev/null || { echo "needs parallel-ssh: apt-get install pssh" >&2; exit 2; }
python3 -c 'import asyncssh, ansible' 2>/dev/null || { echo "needs: pip install asyncssh ansible-core" >&2; exit 2; }
cargo build --release --bins -q
cargo bench -q -p tunnel-tests --bench ssh -- "$@"
