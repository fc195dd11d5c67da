// One room: a Durable Object holding the room's WebSockets. Hibernation-safe: everything a
// frame needs is in each socket's attachment (its state and node id) and is rebuilt from
// `ctx.getWebSockets()` whenever the object wakes with empty fields.

import { DurableObject } from "cloudflare:workers";

import {
  agree,
  decode,
  DecodeError,
  encode,
  ErrorCode,
  Frame,
  hex,
  MAX_FRAME,
  sendToRecvInPlace,
  SPEAKS_THIS,
  SPEAKS_V1,
  SUBPROTOCOL,
  T,
  unhex,
} from "./codec";
import { challenge, verify } from "./join";

export interface Env {
  ROOMS: DurableObjectNamespace<Room>;
  /** A Worker secret: clients must send `Authorization: Bearer <it>`. */
  ACCESS_TOKEN?: string;
  MAX_PEERS_PER_ROOM?: string;
  MAILBOX_BYTES?: string;
  DRAIN_BYTES_PER_SEC?: string;
}

/** What a socket carries across hibernation (kept far under the 2 KiB Cloudflare allows). */
export type Attachment =
  /** Challenged, waiting for its Join: the handshake secrets, hex; `v` the protocol version agreed. */
  | { s: "c"; room: string; addr: string; since: number; nonce: string; key: string; secret: string; v: number }
  /** Joined as node `id`, speaking protocol version `v`. */
  | { s: "j"; room: string; addr: string; id: string; v: number }
  /** Replaced or refused: never routed to again. */
  | { s: "x" };

/** No Join this long after the Challenge: closed, as the Rust relay's handshake timeout. */
export const HANDSHAKE_MS = 10_000;
/** A Welcome must fit in 1 MiB, the largest message Cloudflare delivers: 32 bytes a peer. */
const MAX_PEERS_CAP = 32_000;

const number = (v: string | undefined, fallback: number) => {
  const n = Number(v);
  return Number.isFinite(n) && n > 0 ? n : fallback;
};

export class Room extends DurableObject<Env> {
  /** node id (hex) -> its socket. A cache of the attachments: null after a wake-up. */
  private table: Map<string, WebSocket> | null = null;
  /**
   * Bytes sent to each receiver that it has probably not read yet. Durable Objects give no
   * backpressure (`ws.send` queues without limit and `bufferedAmount` is not implemented), so
   * this estimates the queue, assuming it drains at DRAIN_BYTES_PER_SEC, and answers the
   * sender `Dropped` past MAILBOX_BYTES, as the Rust relay's mailbox does. Nodes resend.
   */
  private queued = new Map<string, { bytes: number; at: number }>();

  private readonly maxPeers: number;
  private readonly mailboxBytes: number;
  private readonly drainBytesPerSec: number;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.maxPeers = Math.min(number(env.MAX_PEERS_PER_ROOM, 4096), MAX_PEERS_CAP);
    this.mailboxBytes = number(env.MAILBOX_BYTES, 4 << 20);
    this.drainBytesPerSec = number(env.DRAIN_BYTES_PER_SEC, 256 << 20);
  }

  async fetch(request: Request): Promise<Response> {
    const room = new URL(request.url).pathname.slice("/r/".length);
    const pair = new WebSocketPair();
    const [client, server] = Object.values(pair);
    this.ctx.acceptWebSocket(server);
    const c = await challenge();
    const protocol = agree(request.headers.get("Sec-WebSocket-Protocol")) ?? SUBPROTOCOL;
    const speaks = protocol === SUBPROTOCOL ? SPEAKS_THIS : SPEAKS_V1;
    const attachment: Attachment = {
      s: "c",
      room,
      addr: request.headers.get("CF-Connecting-IP") ?? "unknown",
      since: Date.now(),
      nonce: hex(c.nonce),
      key: hex(c.relayKey),
      secret: hex(c.secret),
      v: speaks.version,
    };
    server.serializeAttachment(attachment);
    // Sent before the 101: it is the first message the node reads.
    server.send(encode({ type: "Challenge", nonce: c.nonce, relayKey: c.relayKey, speaks }));
    this.sweepHandshakes();
    return new Response(null, { status: 101, webSocket: client, headers: { "Sec-WebSocket-Protocol": protocol } });
  }

  /**
   * Closes sockets that never joined, as the Rust relay's handshake timeout does. Swept on
   * each new connection and each join rather than by an alarm: in workerd an alarm that fires
   * while the object is being hibernated kills the process ("Promise callback destroyed
   * itself"), and a hibernated socket that is still waiting costs nothing.
   */
  private sweepHandshakes(): void {
    for (const ws of this.ctx.getWebSockets()) {
      const att = ws.deserializeAttachment() as Attachment | null;
      if (att?.s === "c" && Date.now() - att.since >= HANDSHAKE_MS) {
        this.refuse(ws, ErrorCode.HandshakeTimeout, "no Join in time");
      }
    }
  }

  async webSocketMessage(ws: WebSocket, message: ArrayBuffer | string): Promise<void> {
    const att = ws.deserializeAttachment() as Attachment | null;
    if (typeof message === "string") {
      const text = "text frames are not part of the relay protocol";
      return att?.s === "j" ? notice(ws, att, ErrorCode.BadFrame, text) : this.refuse(ws, ErrorCode.BadFrame, text);
    }
    const bytes = new Uint8Array(message);
    if (bytes.length > MAX_FRAME) {
      return this.refuse(ws, ErrorCode.TooLarge, `frame of ${bytes.length} bytes over the limit of ${MAX_FRAME}`);
    }
    if (att?.s === "c") return this.onJoin(ws, att, bytes);
    if (att?.s === "j") return this.onFrame(ws, att, bytes);
  }

  async webSocketClose(ws: WebSocket, code: number): Promise<void> {
    this.leave(ws);
    try {
      ws.close(code === 1005 || code === 1006 ? 1000 : code, "closing");
    } catch {
      // Already closed (newer runtimes answer the close themselves).
    }
  }

  async webSocketError(ws: WebSocket): Promise<void> {
    this.leave(ws);
  }

  private async onJoin(ws: WebSocket, att: Extract<Attachment, { s: "c" }>, bytes: Uint8Array): Promise<void> {
    let frame: Frame;
    try {
      frame = decode(bytes);
    } catch (e) {
      return this.refuse(ws, ErrorCode.BadFrame, (e as Error).message);
    }
    if (frame.type !== "Join") return this.refuse(ws, ErrorCode.BadFrame, `expected Join, got ${frame.type}`);
    const challenge = { nonce: unhex(att.nonce), relayKey: unhex(att.key), secret: unhex(att.secret) };
    if (!(await verify(challenge, frame.roomId, frame.nodeId, frame.proof))) {
      const text = "join refused: the proof does not match the node id (wrong key, or a weak key)";
      return this.refuse(ws, ErrorCode.AuthFailed, text);
    }
    if (hex(frame.roomId) !== att.room) {
      return this.refuse(ws, ErrorCode.BadFrame, "the Join names another room than the URL path");
    }
    this.sweepHandshakes();
    const id = hex(frame.nodeId);
    const table = this.routes();
    if (!table.has(id) && table.size >= this.maxPeers) {
      return this.refuse(ws, ErrorCode.RoomFull, `room is full (${this.maxPeers} peers)`);
    }
    const old = table.get(id);
    if (old !== undefined && old !== ws) {
      // Newest wins; the old connection leaves quietly (the others hear PeerJoined below).
      old.serializeAttachment({ s: "x" } satisfies Attachment);
      sendFrame(old, { type: "Error", code: ErrorCode.Replaced, text: "replaced by a newer connection of the same node" });
      closeQuietly(old);
    }
    ws.serializeAttachment({ s: "j", room: att.room, addr: att.addr, id, v: att.v } satisfies Attachment);
    table.set(id, ws);
    this.queued.delete(id);
    const joined = encode({ type: "PeerJoined", nodeId: frame.nodeId });
    const others: Uint8Array[] = [];
    for (const [other, peer] of table) {
      if (other === id) continue;
      others.push(unhex(other));
      trySend(peer, joined);
    }
    sendFrame(ws, { type: "Welcome", observedAddr: att.addr, peers: others });
  }

  private onFrame(ws: WebSocket, att: Extract<Attachment, { s: "j" }>, bytes: Uint8Array): void {
    if (bytes[0] === T.Send) {
      let to: Uint8Array;
      try {
        to = sendToRecvInPlace(bytes, unhex(att.id));
      } catch (e) {
        return notice(ws, att, ErrorCode.BadFrame, `${(e as Error).message}; ignored`);
      }
      const toHex = hex(to);
      const dest = this.routes().get(toHex);
      if (dest === undefined || !this.admit(toHex, bytes.length) || !trySend(dest, bytes)) {
        sendFrame(ws, { type: "Dropped", to });
      }
      return;
    }
    let frame: Frame;
    try {
      frame = decode(bytes);
    } catch (e) {
      return notice(ws, att, ErrorCode.BadFrame, `${(e as DecodeError).message}; ignored`);
    }
    if (frame.type === "Ping") return sendFrame(ws, { type: "Pong", data: frame.data });
    if (frame.type === "Pong") return;
    notice(ws, att, ErrorCode.BadFrame, `unexpected ${frame.type} frame after Join; ignored`);
  }

  /** Counts `len` more bytes toward `to`'s estimated queue; false if that is over the bound. */
  private admit(to: string, len: number): boolean {
    const [limit, rate] = [this.mailboxBytes, this.drainBytesPerSec];
    const now = Date.now();
    const q = this.queued.get(to) ?? { bytes: 0, at: now };
    const left = Math.max(0, q.bytes - ((now - q.at) / 1000) * rate);
    if (left + len > limit) {
      this.queued.set(to, { bytes: left, at: now });
      return false;
    }
    this.queued.set(to, { bytes: left + len, at: now });
    return true;
  }

  /** Says why in an Error frame, then closes; a joined node leaves the room. */
  private refuse(ws: WebSocket, code: number, text: string): void {
    this.leave(ws);
    ws.serializeAttachment({ s: "x" } satisfies Attachment);
    sendFrame(ws, { type: "Error", code, text });
    closeQuietly(ws);
  }

  /** Removes a joined socket's node, if the socket still holds it, and tells the others. */
  private leave(ws: WebSocket): void {
    const att = ws.deserializeAttachment() as Attachment | null;
    if (att?.s !== "j") return;
    const table = this.routes();
    if (table.get(att.id) !== ws) return;
    table.delete(att.id);
    this.queued.delete(att.id);
    const left = encode({ type: "PeerLeft", nodeId: unhex(att.id) });
    for (const peer of table.values()) trySend(peer, left);
  }

  private routes(): Map<string, WebSocket> {
    if (this.table === null) {
      this.table = new Map();
      for (const ws of this.ctx.getWebSockets()) {
        const att = ws.deserializeAttachment() as Attachment | null;
        if (att?.s === "j") this.table.set(att.id, ws);
      }
    }
    return this.table;
  }
}

/**
 * A frame from a joined node the relay does not act on is dropped, never a reason to end the
 * connection. A v2 node is told why; a v1 node would take any Error as the end, so it is not.
 */
function notice(ws: WebSocket, att: Extract<Attachment, { s: "j" }>, code: number, text: string): void {
  if (att.v >= 2) sendFrame(ws, { type: "Error", code, text });
}

function sendFrame(ws: WebSocket, frame: Frame): void {
  trySend(ws, encode(frame));
}

/** Sends unless the socket is already closing (then the frame has nowhere to go). */
function trySend(ws: WebSocket, bytes: Uint8Array): boolean {
  try {
    ws.send(bytes);
    return true;
  } catch {
    return false;
  }
}

function closeQuietly(ws: WebSocket): void {
  try {
    ws.close(1000, "closing");
  } catch {
    // already closed
  }
}
