// A node's side of the join, written from crates/proto/src/join.rs, for the tests.
import { concat } from "../src/join";

const enc = new TextEncoder();

export interface TestNode {
  id: Uint8Array;
  prove(nonce: Uint8Array, relayKey: Uint8Array, roomId: Uint8Array): Promise<Uint8Array>;
}

export async function testNode(): Promise<TestNode> {
  const pair = (await crypto.subtle.generateKey({ name: "X25519" }, true, ["deriveBits"])) as CryptoKeyPair;
  const id = new Uint8Array((await crypto.subtle.exportKey("raw", pair.publicKey)) as ArrayBuffer);
  return {
    id,
    async prove(nonce, relayKey, roomId) {
      const relay = await crypto.subtle.importKey("raw", relayKey, { name: "X25519" }, false, []);
      const params = { name: "X25519", public: relay } as unknown as SubtleCryptoDeriveKeyAlgorithm;
      const shared = await crypto.subtle.deriveBits(params, pair.privateKey, 256);
      const ikm = await crypto.subtle.importKey("raw", shared, "HKDF", false, ["deriveBits"]);
      const salt = enc.encode("tunnel-relay.v1 join key");
      const k = await crypto.subtle.deriveBits({ name: "HKDF", hash: "SHA-256", salt, info: new Uint8Array(0) }, ikm, 256);
      const mac = await crypto.subtle.importKey("raw", k, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
      const transcript = concat([enc.encode("tunnel-relay.v1 join proof"), nonce, relayKey, roomId, id]);
      return new Uint8Array(await crypto.subtle.sign("HMAC", mac, transcript));
    },
  };
}
