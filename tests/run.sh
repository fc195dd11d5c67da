#!/usr/bin/env bash
# The whole test suite: formatting, lints, every test, and a bounded fuzz run.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# End-to-end tests start the real binaries; build them first.
cargo build --workspace --bins
cargo test --workspace
fuzz/run.sh "${TUNNEL_FUZZ_RUNS:-20000}"
