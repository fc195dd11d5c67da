import { describe, expect, it } from "vitest";

import { agree, decode, encode, Frame, hex, MAX_PAYLOAD, sendToRecvInPlace, SPEAKS_V1, unhex } from "../src/codec";
import vectors from "../../tests/vectors/relay_frames.json";

describe("the codec against the vectors the Rust codec reads", () => {
  for (const v of vectors.vectors) {
    it(`${v.name} (${v.frame})`, () => {
      const frame = decode(unhex(v.hex));
      expect(frame.type).toBe(v.frame);
      expect(hex(encode(frame))).toBe(v.hex);
    });
  }
});

describe("decoding refuses what the Rust codec refuses", () => {
  const ping = encode({ type: "Ping", data: 7n });
  it("empty, unknown, truncated, trailing", () => {
    expect(() => decode(new Uint8Array(0))).toThrow("empty relay frame");
    expect(() => decode(Uint8Array.of(0x7f))).toThrow("unknown relay frame type 0x7f");
    expect(() => decode(ping.subarray(0, 5))).toThrow("truncated: Ping needs 4 more bytes");
    expect(() => decode(Uint8Array.of(...ping, 0))).toThrow("Ping has 1 trailing bytes");
  });
  it("lengths past the limits, before allocating", () => {
    const send = new Uint8Array(1 + 32 + 4);
    send[0] = 0x06;
    new DataView(send.buffer).setUint32(33, MAX_PAYLOAD + 1);
    expect(() => decode(send)).toThrow(`payload length ${MAX_PAYLOAD + 1} exceeds the limit ${MAX_PAYLOAD}`);
    const welcome = Uint8Array.of(0x03, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff);
    expect(() => decode(welcome)).toThrow("peers length 4294967295 exceeds the limit 65536");
  });
  it("text that is not UTF-8", () => {
    const error = Uint8Array.of(0x0c, 0, 1, 0, 0, 0, 1, 0xff);
    expect(() => decode(error)).toThrow("text is not UTF-8");
  });
});

it("reads the version fields of Challenge and Join, and ignores a later version's extensions", () => {
  const join = { type: "Join", roomId: new Uint8Array(32), nodeId: new Uint8Array(32).fill(1), proof: new Uint8Array(32) } as const;
  expect(encode({ ...join, speaks: SPEAKS_V1 }).length).toBe(97);
  const later = { version: 9, features: 0xffn };
  const bytes = Uint8Array.of(...encode({ ...join, speaks: later }), 1, 2, 3);
  expect(decode(bytes)).toEqual({ ...join, speaks: later });
  expect(agree("tunnel-relay.v2, tunnel-relay.v1")).toBe("tunnel-relay.v2");
  expect(agree("tunnel-relay.v1")).toBe("tunnel-relay.v1");
  expect(agree("tunnel-relay.v0")).toBeNull();
});

it("Send becomes Recv in place, stamped with the sender", () => {
  const to = new Uint8Array(32).fill(2);
  const from = new Uint8Array(32).fill(9);
  const payload = Uint8Array.of(1, 2, 3);
  const bytes = encode({ type: "Send", to, payload });
  expect(hex(sendToRecvInPlace(bytes, from))).toBe(hex(to));
  expect(decode(bytes)).toEqual({ type: "Recv", from, payload } satisfies Frame);
});
