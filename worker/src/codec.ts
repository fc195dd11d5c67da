// The relay protocol (`tunnel-relay.v2`, still serving v1), byte for byte as
// crates/proto/src/relay.rs: one WebSocket binary message is one frame; a type byte, then the
// fields; fixed fields raw, integers big-endian, variable fields a u32 length and the bytes; no
// trailing data, except that from v2 on Challenge and Join end with the sender's version and
// feature bits, and what follows them (a later version's fields) is ignored.

export const MAX_PAYLOAD = 256 * 1024;
export const SEND_HEADER_LEN = 1 + 32 + 4;
export const MAX_FRAME = SEND_HEADER_LEN + MAX_PAYLOAD;
export const MAX_TEXT = 1024;
export const MAX_WELCOME_PEERS = 65_536;
export const SUBPROTOCOL = "tunnel-relay.v2";
export const SUBPROTOCOL_V1 = "tunnel-relay.v1";

/** A side's protocol version and feature bits; v1 puts neither on the wire. */
export interface Speaks {
  version: number;
  features: bigint;
}
export const SPEAKS_V1: Speaks = { version: 1, features: 0n };
/**
 * The subprotocol to answer a `Sec-WebSocket-Protocol` offer with: the newest offered that
 * this relay speaks, or null.
 */
export function agree(offer: string | null): string | null {
  const offered = (offer ?? "").split(",").map((p) => p.trim());
  return [SUBPROTOCOL, SUBPROTOCOL_V1].find((p) => offered.includes(p)) ?? null;
}

/** This relay. No feature bits are defined yet. */
export const SPEAKS_THIS: Speaks = { version: 2, features: 0n };

export const T = {
  Challenge: 0x01,
  Join: 0x02,
  Welcome: 0x03,
  PeerJoined: 0x04,
  PeerLeft: 0x05,
  Send: 0x06,
  Recv: 0x07,
  Dropped: 0x08,
  Ping: 0x09,
  Pong: 0x0a,
  Restarting: 0x0b,
  Error: 0x0c,
} as const;

export const ErrorCode = {
  BadFrame: 1,
  AuthFailed: 2,
  Replaced: 3,
  RoomFull: 4,
  HandshakeTimeout: 5,
  TooLarge: 6,
  ServerFull: 7,
  /** The Rust relay's "too far behind: reconnect". */
  Behind: 100,
} as const;

export type Frame =
  | { type: "Challenge"; nonce: Uint8Array; relayKey: Uint8Array; speaks: Speaks }
  | { type: "Join"; roomId: Uint8Array; nodeId: Uint8Array; proof: Uint8Array; speaks: Speaks }
  | { type: "Welcome"; observedAddr: string; peers: Uint8Array[] }
  | { type: "PeerJoined"; nodeId: Uint8Array }
  | { type: "PeerLeft"; nodeId: Uint8Array }
  | { type: "Send"; to: Uint8Array; payload: Uint8Array }
  | { type: "Recv"; from: Uint8Array; payload: Uint8Array }
  | { type: "Dropped"; to: Uint8Array }
  | { type: "Ping"; data: bigint }
  | { type: "Pong"; data: bigint }
  | { type: "Restarting"; reconnectInMs: number }
  | { type: "Error"; code: number; text: string };

export class DecodeError extends Error {}

const NAMES: Record<number, Frame["type"]> = Object.fromEntries(
  Object.entries(T).map(([name, ty]) => [ty, name as Frame["type"]]),
);

const utf8 = new TextEncoder();

class Writer {
  private parts: Uint8Array[] = [];
  private len = 0;
  bytes(b: Uint8Array): this {
    this.parts.push(b);
    this.len += b.length;
    return this;
  }
  u8(v: number): this {
    return this.bytes(Uint8Array.of(v));
  }
  u16(v: number): this {
    const b = new Uint8Array(2);
    new DataView(b.buffer).setUint16(0, v);
    return this.bytes(b);
  }
  u32(v: number): this {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, v);
    return this.bytes(b);
  }
  u64(v: bigint): this {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, v);
    return this.bytes(b);
  }
  speaks(s: Speaks): this {
    return s.version >= 2 ? this.u16(s.version).u64(s.features) : this;
  }
  id(b: Uint8Array): this {
    if (b.length !== 32) throw new RangeError("ids are 32 bytes");
    return this.bytes(b);
  }
  variable(b: Uint8Array, max: number): this {
    if (b.length > max) throw new RangeError("field over its limit");
    return this.u32(b.length).bytes(b);
  }
  finish(): Uint8Array {
    const out = new Uint8Array(this.len);
    let at = 0;
    for (const p of this.parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }
}

/** Cuts `text` to at most `max` UTF-8 bytes on a character boundary, as the Rust side does. */
function truncatedUtf8(text: string, max: number): Uint8Array {
  const all = utf8.encode(text);
  if (all.length <= max) return all;
  let end = max;
  while (end > 0 && (all[end] & 0xc0) === 0x80) end--;
  return all.subarray(0, end);
}

export function encode(f: Frame): Uint8Array {
  const w = new Writer().u8(T[f.type]);
  switch (f.type) {
    case "Challenge":
      return w.bytes(f.nonce).id(f.relayKey).speaks(f.speaks).finish();
    case "Join":
      return w.bytes(f.roomId).id(f.nodeId).bytes(f.proof).speaks(f.speaks).finish();
    case "Welcome": {
      w.variable(utf8.encode(f.observedAddr), MAX_TEXT).u32(f.peers.length);
      for (const p of f.peers) w.id(p);
      return w.finish();
    }
    case "PeerJoined":
    case "PeerLeft":
      return w.id(f.nodeId).finish();
    case "Send":
      return w.id(f.to).variable(f.payload, MAX_PAYLOAD).finish();
    case "Recv":
      return w.id(f.from).variable(f.payload, MAX_PAYLOAD).finish();
    case "Dropped":
      return w.id(f.to).finish();
    case "Ping":
    case "Pong":
      return w.u64(f.data).finish();
    case "Restarting":
      return w.u32(f.reconnectInMs).finish();
    case "Error":
      return w.u16(f.code).variable(truncatedUtf8(f.text, MAX_TEXT), MAX_TEXT).finish();
  }
}

class Reader {
  private at = 0;
  private view: DataView;
  constructor(
    private buf: Uint8Array,
    private frame: string,
  ) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }
  need(n: number): void {
    const left = this.buf.length - this.at;
    if (left < n) throw new DecodeError(`relay frame truncated: ${this.frame} needs ${n - left} more bytes`);
  }
  take(n: number): Uint8Array {
    this.need(n);
    const out = this.buf.subarray(this.at, this.at + n);
    this.at += n;
    return out;
  }
  u16(): number {
    this.need(2);
    const v = this.view.getUint16(this.at);
    this.at += 2;
    return v;
  }
  u32(): number {
    this.need(4);
    const v = this.view.getUint32(this.at);
    this.at += 4;
    return v;
  }
  u64(): bigint {
    this.need(8);
    const v = this.view.getBigUint64(this.at);
    this.at += 8;
    return v;
  }
  variable(field: string, max: number): Uint8Array {
    const len = this.u32();
    if (len > max) throw new DecodeError(`relay frame ${this.frame}: ${field} length ${len} exceeds the limit ${max}`);
    return this.take(len);
  }
  text(field: string): string {
    const bytes = this.variable(field, MAX_TEXT);
    try {
      return new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
    } catch {
      throw new DecodeError(`relay frame ${this.frame}: ${field} is not UTF-8`);
    }
  }
  /** The version fields at the end of a Challenge/Join: none is v1; what follows is ignored. */
  speaks(): Speaks {
    if (this.at === this.buf.length) return SPEAKS_V1;
    const speaks = { version: this.u16(), features: this.u64() };
    this.at = this.buf.length;
    return speaks;
  }
  finish(): void {
    const extra = this.buf.length - this.at;
    if (extra !== 0) throw new DecodeError(`relay frame ${this.frame} has ${extra} trailing bytes`);
  }
}

/** Decodes one whole frame; the byte fields of the result point into `buf`. */
export function decode(buf: Uint8Array): Frame {
  if (buf.length === 0) throw new DecodeError("empty relay frame");
  const name = NAMES[buf[0]];
  if (name === undefined) throw new DecodeError(`unknown relay frame type 0x${buf[0].toString(16).padStart(2, "0")}`);
  const r = new Reader(buf.subarray(1), name);
  let f: Frame;
  switch (name) {
    case "Challenge":
      f = { type: name, nonce: r.take(32), relayKey: r.take(32), speaks: r.speaks() };
      break;
    case "Join":
      f = { type: name, roomId: r.take(32), nodeId: r.take(32), proof: r.take(32), speaks: r.speaks() };
      break;
    case "Welcome": {
      const observedAddr = r.text("observed_addr");
      const count = r.u32();
      if (count > MAX_WELCOME_PEERS) {
        throw new DecodeError(`relay frame Welcome: peers length ${count} exceeds the limit ${MAX_WELCOME_PEERS}`);
      }
      r.need(count * 32);
      const peers = Array.from({ length: count }, () => r.take(32));
      f = { type: name, observedAddr, peers };
      break;
    }
    case "PeerJoined":
    case "PeerLeft":
      f = { type: name, nodeId: r.take(32) };
      break;
    case "Send":
      f = { type: name, to: r.take(32), payload: r.variable("payload", MAX_PAYLOAD) };
      break;
    case "Recv":
      f = { type: name, from: r.take(32), payload: r.variable("payload", MAX_PAYLOAD) };
      break;
    case "Dropped":
      f = { type: name, to: r.take(32) };
      break;
    case "Ping":
    case "Pong":
      f = { type: name, data: r.u64() };
      break;
    case "Restarting":
      f = { type: name, reconnectInMs: r.u32() };
      break;
    case "Error":
      f = { type: name, code: r.u16(), text: r.text("text") };
      break;
  }
  r.finish();
  return f;
}

/**
 * Checks that `buf` is a well-formed `Send` and turns it into the `Recv` the relay forwards,
 * in place (type byte and address rewritten, payload untouched). Returns the destination.
 */
export function sendToRecvInPlace(buf: Uint8Array, from: Uint8Array): Uint8Array {
  if (buf.length === 0) throw new DecodeError("empty relay frame");
  if (buf[0] !== T.Send) throw new DecodeError(`unknown relay frame type 0x${buf[0].toString(16)}`);
  const r = new Reader(buf.subarray(1), "Send");
  const to = r.take(32).slice();
  r.variable("payload", MAX_PAYLOAD);
  r.finish();
  buf[0] = T.Recv;
  buf.set(from, 1);
  return to;
}

export function hex(b: Uint8Array): string {
  let s = "";
  for (const x of b) s += x.toString(16).padStart(2, "0");
  return s;
}

export function unhex(s: string): Uint8Array {
  if (s.length % 2 !== 0 || !/^[0-9a-f]*$/.test(s)) throw new RangeError("not lowercase hex");
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16);
  return out;
}
