#!/usr/bin/env bash
# Starts the Worker relay on this machine under a bare workerd (no Cloudflare account, no
# network) and prints its ws:// URL. Usage: worker/run-local.sh [PORT]   (default 8787)
set -euo pipefail
cd "$(dirname "$0")"
port="${1:-8787}"
if [ ! -x node_modules/@cloudflare/workerd-linux-64/bin/workerd ]; then
  npm ci --no-audit --no-fund >/dev/null
fi
npm run --silent build >/dev/null
echo "Worker relay: ws://127.0.0.1:$port   (nodes: tunnel run --relay ws://127.0.0.1:$port)" >&2
exec node_modules/@cloudflare/workerd-linux-64/bin/workerd serve relay.capnp --socket-addr "http=127.0.0.1:$port"
