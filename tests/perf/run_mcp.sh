#!/usr/bin/env bash
# The MCP `exec` tool round trip (500 calls from the official Python SDK over stdio) beside
# the raw CLI figure, same run. Needs the client: pip install mcp jsonschema.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --bins -q
cargo bench -q -p tunnel-tests --bench mcp_exec
