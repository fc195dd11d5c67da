# The Worker relay under a bare `workerd` (no account, no network): what the Rust tests and
# run-local.sh start. Keep in step with wrangler.jsonc.
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [ (name = "main", worker = .relay) ],
  sockets = [ (name = "http", address = "127.0.0.1:8787", http = (), service = "main") ],
);

const relay :Workerd.Worker = (
  modules = [ (name = "index.js", esModule = embed "dist/index.js") ],
  compatibilityDate = "2026-04-01",
  bindings = [
    (name = "ROOMS", durableObjectNamespace = "Room"),
    (name = "MAX_PEERS_PER_ROOM", fromEnvironment = "TUNNEL_WORKER_MAX_PEERS_PER_ROOM"),
    (name = "MAILBOX_BYTES", fromEnvironment = "TUNNEL_WORKER_MAILBOX_BYTES"),
    (name = "ACCESS_TOKEN", fromEnvironment = "TUNNEL_WORKER_ACCESS_TOKEN"),
    (name = "DRAIN_BYTES_PER_SEC", fromEnvironment = "TUNNEL_WORKER_DRAIN_BYTES_PER_SEC"),
  ],
  durableObjectNamespaces = [ (className = "Room", uniqueKey = "tunnel-relay-Room", enableSql = true) ],
  durableObjectStorage = (inMemory = void),
);
