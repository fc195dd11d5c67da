#!/usr/bin/env bash
# The MCP `exec` tool round trip (500 calls from the official Python SDK over stdio) through a
# `tunnel mcp` attached to `tunnel run` and through one with its own node, each beside the
# client's floor on the same session, and the raw CLI: one run, same relay and peers.
# Needs the client: pip install mcp jsonschema (tests/setup.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --bins -q
cargo bench -q -p tunnel-tests --bench mcp_exec
