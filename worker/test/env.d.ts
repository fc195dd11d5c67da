declare namespace Cloudflare {
  interface Env {
    ROOMS: DurableObjectNamespace<import("../src/room").Room>;
    MAX_PEERS_PER_ROOM?: string;
  }
}
