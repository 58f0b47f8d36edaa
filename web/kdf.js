// The console's sign-in: the password never leaves the page. Argon2id
// with the account's parameters, then BLAKE3 in key-derivation mode with
// the same context string as haven-format's `derive_login_keys`: only the
// auth key goes to the server, exactly as from the CLI.
import { argon2id } from "hash-wasm";
import { blake3 } from "@noble/hashes/blake3.js";

const CTX_AUTH = "haven 2026-11 login auth key v1";

function hexToBytes(hex) {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.substr(2 * i, 2), 16);
  return out;
}

function toHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export async function havenAuthKey(password, kdf) {
  if (kdf.algorithm !== "argon2id") throw new Error("unsupported key derivation " + kdf.algorithm);
  const root = await argon2id({
    password,
    salt: hexToBytes(kdf.salt),
    parallelism: kdf.parallelism,
    iterations: kdf.iterations,
    memorySize: kdf.memory_kib,
    hashLength: 32,
    outputType: "binary",
  });
  const auth = blake3(root, { context: new TextEncoder().encode(CTX_AUTH) });
  return toHex(auth);
}

globalThis.havenAuthKey = havenAuthKey;
