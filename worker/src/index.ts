// tunnel's relay on Cloudflare Workers: the same protocol as `tunnel-relay`
// (crates/proto/src/relay.rs), one Durable Object per room. The relay sees the room id (a
// hash of the room's name and token), node ids and ciphertext; never a token or plaintext.

import { agree } from "./codec";
import type { Env } from "./room";

export { Room } from "./room";

const ROOM_PATH = /^\/r\/([0-9a-f]{64})$/;

function text(status: number, body: string): Response {
  return new Response(body, { status, headers: { "Content-Type": "text/plain" } });
}

/** Compares in time independent of where the strings differ (lengths are not secret). */
function sameSecret(a: string, b: string): boolean {
  const enc = new TextEncoder();
  const [x, y] = [enc.encode(a), enc.encode(b)];
  return x.length === y.length && crypto.subtle.timingSafeEqual(x, y);
}

export default {
  async fetch(request: Request, env: Env): Promise<Response> {
    const url = new URL(request.url);
    if (url.pathname === "/healthz") return text(200, "ok\n");
    const room = ROOM_PATH.exec(url.pathname);
    if (room === null) return text(404, "not found: the relay serves /r/<room id> (WebSocket) and /healthz\n");
    if (request.method !== "GET") return text(405, "use GET\n");
    if ((request.headers.get("Upgrade") ?? "").toLowerCase() !== "websocket") {
      return text(426, "this endpoint speaks WebSocket (subprotocol tunnel-relay.v2 or tunnel-relay.v1)\n");
    }
    if (agree(request.headers.get("Sec-WebSocket-Protocol")) === null) {
      return text(400, "missing subprotocol tunnel-relay.v2 or tunnel-relay.v1 (client and relay versions differ?)\n");
    }
    if (env.ACCESS_TOKEN) {
      const given = (request.headers.get("Authorization") ?? "").replace(/^Bearer /, "");
      if (!sameSecret(given, env.ACCESS_TOKEN)) return text(401, "this relay needs a valid access token\n");
    }
    return env.ROOMS.get(env.ROOMS.idFromName(room[1])).fetch(request);
  },
} satisfies ExportedHandler<Env>;
