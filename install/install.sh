#!/usr/bin/env bash
# Installs tunnel and tunnel-relay, writes the peer's config, and sets up the service.
#
#   install/install.sh --relay ws://relay.example:8080 --room ops --token "$(tunnel token)" [--name web-1] [--tags web,prod]
#
# Options: --prefix DIR (default /usr/local), --confdir DIR (default /etc/tunnel),
#          --from DIR (use built binaries there instead of `cargo build --release`),
#          --no-service (only copy binaries and write the config), --relay-service (also the relay unit).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
prefix=/usr/local confdir=/etc/tunnel from="" service=1 relay_service=0
relay="" room="" token="" name="" tags=""
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="$2"; shift 2 ;;
    --confdir) confdir="$2"; shift 2 ;;
    --from) from="$2"; shift 2 ;;
    --no-service) service=0; shift ;;
    --relay-service) relay_service=1; shift ;;
    --relay) relay="$2"; shift 2 ;;
    --room) room="$2"; shift 2 ;;
    --token) token="$2"; shift 2 ;;
    --name) name="$2"; shift 2 ;;
    --tags) tags="$2"; shift 2 ;;
    *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
if [ -z "$from" ]; then
  (cd "$here/.." && cargo build --release --bins)
  from="$here/../target/release"
fi
bindir="$prefix/bin"
install -d -m 0755 "$bindir"
install -m 0755 "$from/tunnel" "$from/tunnel-relay" "$bindir/"
echo "installed $bindir/tunnel and $bindir/tunnel-relay"

if [ -n "$relay$room$token" ]; then
  if [ -z "$relay" ] || [ -z "$room" ] || [ -z "$token" ]; then
    echo "install.sh: --relay, --room and --token go together" >&2; exit 2
  fi
  install -d -m 0700 "$confdir"
  # The token is a secret: the file is created private before anything is written to it.
  (umask 077; {
    printf 'relay = "%s"\nroom = "%s"\ntoken = "%s"\n' "$relay" "$room" "$token"
    [ -n "$name" ] && printf 'name = "%s"\n' "$name"
    [ -n "$tags" ] && printf 'tags = [%s]\n' "$(printf '%s' "$tags" | sed 's/[^,][^,]*/"&"/g')"
    true
  } > "$confdir/config.toml")
  echo "wrote $confdir/config.toml (mode 0600)"
fi

render() { sed -e "s|@BINDIR@|$bindir|g" -e "s|@CONFDIR@|$confdir|g" "$1"; }
[ "$service" = 1 ] || exit 0
case "$(uname -s)" in
  Linux)
    render "$here/tunnel.service" > /etc/systemd/system/tunnel.service
    [ "$relay_service" = 1 ] && render "$here/tunnel-relay.service" > /etc/systemd/system/tunnel-relay.service
    systemctl daemon-reload
    [ "$relay_service" = 1 ] && systemctl enable --now tunnel-relay
    systemctl enable --now tunnel
    echo "started: systemctl status tunnel; the CLI talks to it with TUNNEL_RUNTIME_DIR=/run/tunnel"
    ;;
  Darwin)
    render "$here/dev.tunnel.plist" > /Library/LaunchDaemons/dev.tunnel.plist
    launchctl load -w /Library/LaunchDaemons/dev.tunnel.plist
    echo "started: launchctl list dev.tunnel"
    ;;
  *) echo "install.sh: no service manager support for $(uname -s); run \`tunnel run\` yourself" >&2 ;;
esac
