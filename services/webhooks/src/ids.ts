import { randomBytes } from "node:crypto";

const ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"; // Crockford base32, lower case

function base32(bytes: Uint8Array): string {
  let out = "";
  let bits = 0;
  let value = 0;
  for (const b of bytes) {
    value = (value << 8) | b;
    bits += 8;
    while (bits >= 5) {
      out += ALPHABET[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += ALPHABET[(value << (5 - bits)) & 31];
  return out;
}

/** Time-ordered, unguessable: 48-bit ms timestamp + 80 random bits. */
export function newId(prefix: "ep" | "msg"): string {
  const b = Buffer.alloc(16);
  b.writeUIntBE(Date.now(), 0, 6);
  randomBytes(10).copy(b, 6);
  return `${prefix}_${base32(b)}`;
}

export function newSecret(): string {
  return `whsec_${randomBytes(32).toString("base64")}`;
}
