#!/usr/bin/env bash
# The whole test suite: formatting, lints, every test, and a bounded fuzz run.
set -euo pipefail
cd "$(dirname "$0")/.."
# What the tests need, installed if missing (a fresh machine needs root for this once).
source tests/setup.sh
cargo fmt --all -- --check
# The Worker relay: types, bundle, a deploy dry run (catches a broken wrangler.jsonc) and its
# unit tests in the Workers runtime. The Rust tests below run it under workerd.
(cd worker && CI=true npm run --silent check && npm run --silent build \
  && CI=true npx wrangler deploy --dry-run --outdir dist-wrangler >/dev/null && CI=true npx vitest run)
cargo clippy --workspace --all-targets -- -D warnings
# End-to-end tests start the real binaries; build them first.
cargo build --workspace --bins
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo test --workspace 2>&1 | tee "$log"
fuzz/run.sh "${TUNNEL_FUZZ_RUNS:-20000}"
# One closing line with the totals of every test binary above.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
