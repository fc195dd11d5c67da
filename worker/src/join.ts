// Proof of node id at join, as crates/proto/src/join.rs: the relay sends a nonce and an
// ephemeral X25519 key; the node answers HMAC-SHA256(K, transcript), K = HKDF-SHA256 of
// DH(node, relay ephemeral), the transcript binding nonce, relay key, room id and node id.

const enc = new TextEncoder();
const KEY_SALT = enc.encode("tunnel-relay.v1 join key");
const TRANSCRIPT_LABEL = enc.encode("tunnel-relay.v1 join proof");

/** The relay's half of one handshake: kept in the socket's attachment until the Join. */
export interface Challenge {
  nonce: Uint8Array;
  relayKey: Uint8Array;
  /** The ephemeral private key, PKCS#8 (48 bytes): WebCrypto cannot import a raw one. */
  secret: Uint8Array;
}

export async function challenge(): Promise<Challenge> {
  const pair = (await crypto.subtle.generateKey({ name: "X25519" }, true, ["deriveBits"])) as CryptoKeyPair;
  const relayKey = new Uint8Array((await crypto.subtle.exportKey("raw", pair.publicKey)) as ArrayBuffer);
  const secret = new Uint8Array((await crypto.subtle.exportKey("pkcs8", pair.privateKey)) as ArrayBuffer);
  return { nonce: crypto.getRandomValues(new Uint8Array(32)), relayKey, secret };
}

/** Whether `proof` shows that the sender holds the secret key of `nodeId`. */
export async function verify(
  c: Challenge,
  roomId: Uint8Array,
  nodeId: Uint8Array,
  proof: Uint8Array,
): Promise<boolean> {
  let shared: Uint8Array;
  try {
    const secret = await crypto.subtle.importKey("pkcs8", c.secret, { name: "X25519" }, false, ["deriveBits"]);
    const peer = await crypto.subtle.importKey("raw", nodeId, { name: "X25519" }, false, []);
    // workers-types spell the field `$public`; the runtime wants `public`.
    const params = { name: "X25519", public: peer } as unknown as SubtleCryptoDeriveKeyAlgorithm;
    shared = new Uint8Array(await crypto.subtle.deriveBits(params, secret, 256));
  } catch {
    return false; // a small-order point: no proof can come from it
  }
  // A non-contributory exchange (all zeros) proves nothing, as x25519-dalek's check.
  if (shared.every((b) => b === 0)) return false;
  const ikm = await crypto.subtle.importKey("raw", shared, "HKDF", false, ["deriveBits"]);
  const k = await crypto.subtle.deriveBits(
    { name: "HKDF", hash: "SHA-256", salt: KEY_SALT, info: new Uint8Array(0) },
    ikm,
    256,
  );
  const mac = await crypto.subtle.importKey("raw", k, { name: "HMAC", hash: "SHA-256" }, false, ["verify"]);
  const transcript = concat([TRANSCRIPT_LABEL, c.nonce, c.relayKey, roomId, nodeId]);
  // HMAC verify compares in constant time.
  return crypto.subtle.verify("HMAC", mac, proof, transcript);
}

export function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
