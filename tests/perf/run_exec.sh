#!/usr/bin/env bash
# Exec round trip: `tunnel exec PEER -- true` next to OpenSSH with ControlMaster, same run.
# Needs sshd (Debian: apt-get install openssh-server).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --bins -q
cargo bench -q -p tunnel-tests --bench exec_vs_ssh
