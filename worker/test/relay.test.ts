import { env, runInDurableObject, SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";

import { decode, encode, ErrorCode, Frame, hex } from "../src/codec";
import { challenge, verify } from "../src/join";
import type { Attachment } from "../src/room";
import { testNode, TestNode } from "./node";

describe("join proof", () => {
  it("accepts the node that holds the key and nobody else", async () => {
    const c = await challenge();
    const room = crypto.getRandomValues(new Uint8Array(32));
    const node = await testNode();
    const proof = await node.prove(c.nonce, c.relayKey, room);
    expect(await verify(c, room, node.id, proof)).toBe(true);
    const other = await testNode();
    expect(await verify(c, room, other.id, proof)).toBe(false);
    expect(await verify(c, crypto.getRandomValues(new Uint8Array(32)), node.id, proof)).toBe(false);
    expect(await verify(await challenge(), room, node.id, proof)).toBe(false);
    // A small-order point (all zeros) proves nothing, whatever the proof.
    expect(await verify(c, room, new Uint8Array(32), proof)).toBe(false);
  });
});

/** A WebSocket client inside the runtime that reads frames in order. */
class Client {
  private queue: Frame[] = [];
  private waiting: ((f: Frame) => void)[] = [];
  closed = false;
  constructor(readonly ws: WebSocket) {
    ws.addEventListener("message", (e) => {
      const f = decode(new Uint8Array(e.data as ArrayBuffer));
      const w = this.waiting.shift();
      if (w) w(f);
      else this.queue.push(f);
    });
    ws.addEventListener("close", () => (this.closed = true));
  }
  next(): Promise<Frame> {
    const f = this.queue.shift();
    if (f) return Promise.resolve(f);
    return new Promise((resolve) => this.waiting.push(resolve));
  }
  send(f: Frame) {
    this.ws.send(encode(f));
  }
}

const NEW_NODE = "tunnel-relay.v2, tunnel-relay.v1";
const OLD_NODE = "tunnel-relay.v1";

async function open(room: Uint8Array, offer = NEW_NODE): Promise<Client> {
  const res = await SELF.fetch(`http://relay/r/${hex(room)}`, {
    headers: { Upgrade: "websocket", "Sec-WebSocket-Protocol": offer },
  });
  expect(res.status).toBe(101);
  expect(res.headers.get("Sec-WebSocket-Protocol")).toBe(offer === OLD_NODE ? OLD_NODE : "tunnel-relay.v2");
  const ws = res.webSocket!;
  ws.binaryType = "arraybuffer";
  ws.accept();
  return new Client(ws);
}

async function join(
  room: Uint8Array,
  node?: TestNode,
  offer = NEW_NODE,
): Promise<{ c: Client; node: TestNode; welcome: Frame }> {
  node ??= await testNode();
  const c = await open(room, offer);
  const ch = await c.next();
  if (ch.type !== "Challenge") throw new Error(`expected Challenge, got ${ch.type}`);
  expect(ch.speaks.version).toBe(offer === OLD_NODE ? 1 : 2);
  const proof = await node.prove(ch.nonce, ch.relayKey, room);
  c.send({ type: "Join", roomId: room, nodeId: node.id, proof, speaks: ch.speaks });
  return { c, node, welcome: await c.next() };
}

describe("the room", () => {
  it("routes Send as Recv stamped with the sender, and Dropped for the absent", async () => {
    const room = crypto.getRandomValues(new Uint8Array(32));
    const a = await join(room);
    const b = await join(room);
    expect(b.welcome).toEqual({ type: "Welcome", observedAddr: "unknown", peers: [a.node.id] });
    expect(await a.c.next()).toEqual({ type: "PeerJoined", nodeId: b.node.id });
    a.c.send({ type: "Send", to: b.node.id, payload: Uint8Array.of(1, 2, 3) });
    expect(await b.c.next()).toEqual({ type: "Recv", from: a.node.id, payload: Uint8Array.of(1, 2, 3) });
    const nobody = new Uint8Array(32).fill(5);
    a.c.send({ type: "Send", to: nobody, payload: Uint8Array.of(9) });
    expect(await a.c.next()).toEqual({ type: "Dropped", to: nobody });
  });

  it("drops frames out of place, telling v2 nodes why and v1 nodes nothing; the connection stays", async () => {
    const room = crypto.getRandomValues(new Uint8Array(32));
    const a = await join(room);
    const old = await join(room, undefined, OLD_NODE);
    await a.c.next(); // PeerJoined
    const junk = [encode({ type: "Welcome", observedAddr: "x", peers: [] }), Uint8Array.of(0x7f, 1), Uint8Array.of(0x06, 1)];
    for (const bytes of junk) {
      a.c.ws.send(bytes);
      expect(await a.c.next()).toMatchObject({ type: "Error", code: ErrorCode.BadFrame });
      old.c.ws.send(bytes);
    }
    a.c.ws.send("text");
    expect(await a.c.next()).toMatchObject({ type: "Error", code: ErrorCode.BadFrame });
    old.c.send({ type: "Send", to: a.node.id, payload: Uint8Array.of(4) });
    expect(await a.c.next()).toEqual({ type: "Recv", from: old.node.id, payload: Uint8Array.of(4) });
    old.c.send({ type: "Ping", data: 3n });
    expect(await old.c.next()).toEqual({ type: "Pong", data: 3n });
  });

  it("refuses a forged join, a wrong room and a full room", async () => {
    const room = crypto.getRandomValues(new Uint8Array(32));
    const a = await join(room);
    const mallory = await testNode();
    const forged = await join(room, { id: a.node.id, prove: mallory.prove });
    expect(forged.welcome).toMatchObject({ type: "Error", code: ErrorCode.AuthFailed });
    const c = await open(room);
    const ch = await c.next();
    if (ch.type !== "Challenge") throw new Error("no challenge");
    const elsewhere = crypto.getRandomValues(new Uint8Array(32));
    const proof = await mallory.prove(ch.nonce, ch.relayKey, elsewhere);
    c.send({ type: "Join", roomId: elsewhere, nodeId: mallory.id, proof, speaks: ch.speaks });
    expect(await c.next()).toMatchObject({ type: "Error", code: ErrorCode.BadFrame });
    await join(room);
    await join(room);
    expect((await join(room)).welcome).toMatchObject({ type: "Error", code: ErrorCode.RoomFull, text: "room is full (3 peers)" });
  });

  it("keeps attachments small and routing in them, not in fields", async () => {
    const room = crypto.getRandomValues(new Uint8Array(32));
    const a = await join(room);
    const b = await join(room);
    await a.c.next(); // PeerJoined
    const pending = await open(room);
    await pending.next(); // Challenge: this socket holds the handshake secrets
    const stub = env.ROOMS.get(env.ROOMS.idFromName(hex(room)));
    const sizes = await runInDurableObject(stub, (_room, state) =>
      state.getWebSockets().map((ws) => JSON.stringify(ws.deserializeAttachment() as Attachment).length),
    );
    expect(sizes.length).toBe(3);
    // Cloudflare allows 2,048 bytes; the longest observed address adds at most ~45.
    for (const size of sizes) expect(size).toBeLessThan(600);
    // A fresh instance (as after hibernation) has no table; routing must still work.
    await runInDurableObject(stub, (instance) => {
      (instance as unknown as { table: unknown }).table = null;
    });
    a.c.send({ type: "Send", to: b.node.id, payload: Uint8Array.of(7) });
    expect(await b.c.next()).toEqual({ type: "Recv", from: a.node.id, payload: Uint8Array.of(7) });
  });

  it("answers /healthz and refuses what is not a room upgrade", async () => {
    expect(await (await SELF.fetch("http://relay/healthz")).text()).toBe("ok\n");
    expect((await SELF.fetch("http://relay/")).status).toBe(404);
    const room = hex(new Uint8Array(32));
    expect((await SELF.fetch(`http://relay/r/${room}`)).status).toBe(426);
    const noProtocol = await SELF.fetch(`http://relay/r/${room}`, { headers: { Upgrade: "websocket" } });
    expect(noProtocol.status).toBe(400);
  });
});
