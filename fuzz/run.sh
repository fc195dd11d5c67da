#!/usr/bin/env bash
# Builds the fuzz targets with coverage instrumentation (the same sancov passes cargo-fuzz
# uses; they are stable codegen flags, only the sanitizers need nightly) and runs each one
# for a bounded number of inputs. Usage: fuzz/run.sh [RUNS]   (default 100000 per target)
set -euo pipefail
cd "$(dirname "$0")"
runs="${1:-100000}"
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
# An explicit --target keeps RUSTFLAGS off build scripts, as cargo-fuzz does.
triple="$(rustc -vV | sed -n 's/^host: //p')"
cargo build --release -q --bins --target "$triple"
bin="${CARGO_TARGET_DIR:-target}/$triple/release"
for target in relay_frame handshake_reader session_opener stun control_frame; do
  mkdir -p "corpus/$target"
  echo "fuzz: $target ($runs inputs)"
  "$bin/$target" -runs="$runs" -max_len=4096 -max_total_time=120 "corpus/$target" 2>&1 | grep -E "^(#[0-9]+ +DONE|Done|==|SUMMARY|panicked)" || true
  # libFuzzer exits non-zero on a crash; `set -e` does not see it through the pipe, so check.
  "$bin/$target" -runs=0 "corpus/$target" >/dev/null 2>&1
done
