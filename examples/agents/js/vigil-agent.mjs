#!/usr/bin/env node
// A Vigil heartbeat agent in plain Node (>= 18): node:crypto for ed25519 and the
// `canonicalize` package for RFC 8785 JCS. The whole contract (docs/agents.md):
//
//   1. build the body: server_id, key_version, timestamp (RFC 3339, UTC) and what you report;
//   2. take the body without `signature` and canonicalise it with JCS (RFC 8785);
//   3. sign the UTF-8 bytes of "vigil-heartbeat-v1\n" + that JSON with the server's ed25519 key;
//   4. put the base64 signature in `signature` and POST the body to /v1/agent/heartbeat;
//   5. send the next one after the answer's `next_heartbeat_seconds`.
//
// Usage:
//   vigil-agent.mjs vectors FILE                         check every conformance vector
//   vigil-agent.mjs send --url URL --key FILE --server-id ID [--key-version N] [--once]
//
// FILE for --key is `vigil keygen`'s file: the base64 32-byte seed on one line, or a PKCS#8 PEM
// key (`vigil keygen --format pem`, or `openssl genpkey -algorithm ed25519`).

import { createHash, createPrivateKey, createPublicKey, sign, verify } from "node:crypto";
import { readFileSync } from "node:fs";
import canonicalize from "canonicalize";

const DOMAIN = "vigil-heartbeat-v1\n";
// The DER prefix of a PKCS#8 ed25519 private key; the 32-byte seed follows it.
const PKCS8_ED25519_PREFIX = Buffer.from("302e020100300506032b657004220420", "hex");

/** The private key object for a 32-byte seed. */
function keyFromSeed(seed) {
  if (seed.length !== 32) throw new Error(`an ed25519 seed is 32 bytes, got ${seed.length}`);
  return createPrivateKey({ key: Buffer.concat([PKCS8_ED25519_PREFIX, seed]), format: "der", type: "pkcs8" });
}

/** Reads a key file: a PKCS#8 PEM key or a base64 seed. */
function readKey(path) {
  const text = readFileSync(path, "utf8").trim();
  if (text.startsWith("-----BEGIN")) return createPrivateKey(text);
  return keyFromSeed(Buffer.from(text, "base64"));
}

/** The raw 32 public key bytes (the last 32 bytes of the SPKI DER). */
function publicKeyBytes(privateKey) {
  return createPublicKey(privateKey).export({ format: "der", type: "spki" }).subarray(-32);
}

/** `SHA256:` + unpadded base64 of SHA-256(public key), as the host shows it. */
function fingerprint(publicKey) {
  return "SHA256:" + createHash("sha256").update(publicKey).digest("base64").replace(/=+$/, "");
}

/** The exact bytes that are signed for `body` (its `signature` member left out). */
function signedMessage(body) {
  const { signature: _ignored, ...unsigned } = body;
  return Buffer.from(DOMAIN + canonicalize(unsigned), "utf8");
}

/** `body` with its `signature` member set. */
function signBody(privateKey, body) {
  const signature = sign(null, signedMessage(body), privateKey).toString("base64");
  return { ...body, signature };
}

function checkVectors(path) {
  const doc = JSON.parse(readFileSync(path, "utf8"));
  let failed = 0;
  for (const v of doc.vectors) {
    const problems = [];
    const key = keyFromSeed(Buffer.from(v.private_key_seed_b64, "base64"));
    const publicKey = publicKeyBytes(key);
    if (publicKey.toString("base64") !== v.public_key_b64) problems.push("public key differs");
    if (fingerprint(publicKey) !== v.fingerprint) problems.push("fingerprint differs");
    const body = JSON.parse(v.request_body);
    const message = signedMessage(body);
    if (message.toString("utf8") !== v.signed_message_utf8) problems.push("signed message differs");
    if (signBody(key, body).signature !== v.signature_b64) problems.push("signature differs");
    if (!verify(null, message, createPublicKey(key), Buffer.from(body.signature, "base64"))) {
      problems.push("the vector's signature does not verify");
    }
    if (problems.length) {
      failed += 1;
      console.log(`FAIL ${v.name}: ${problems.join(", ")}`);
    } else {
      console.log(`ok   ${v.name}`);
    }
  }
  console.log(`${doc.vectors.length - failed} of ${doc.vectors.length} vectors pass`);
  return failed === 0 ? 0 : 1;
}

function option(args, name, fallback) {
  const at = args.indexOf(name);
  if (at === -1) {
    if (fallback === undefined) throw new Error(`${name} is required`);
    return fallback;
  }
  return args[at + 1];
}

async function send(args) {
  const url = option(args, "--url").replace(/\/+$/, "") + "/v1/agent/heartbeat";
  const key = readKey(option(args, "--key"));
  const serverId = option(args, "--server-id");
  const keyVersion = Number(option(args, "--key-version", "1"));
  const once = args.includes("--once");
  for (;;) {
    const body = signBody(key, {
      server_id: serverId,
      key_version: keyVersion,
      timestamp: new Date().toISOString(),
      status: "online",
    });
    let wait = 30;
    try {
      const answer = await fetch(url, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      const text = await answer.text();
      console.log(`${answer.status} ${text}`);
      if (answer.ok) {
        wait = JSON.parse(text).next_heartbeat_seconds ?? wait;
      } else if (once) {
        return 1;
      } else {
        wait = Number(answer.headers.get("retry-after")) || wait;
      }
    } catch (error) {
      console.error(`host unreachable: ${error.message}`);
      if (once) return 1;
    }
    if (once) return 0;
    await new Promise((resolve) => setTimeout(resolve, wait * 1000));
  }
}

const [command, ...rest] = process.argv.slice(2);
try {
  if (command === "vectors" && rest[0]) process.exitCode = checkVectors(rest[0]);
  else if (command === "send") process.exitCode = await send(rest);
  else {
    console.error("usage: vigil-agent.mjs vectors FILE | send --url URL --key FILE --server-id ID [--key-version N] [--once]");
    process.exitCode = 2;
  }
} catch (error) {
  console.error(`vigil-agent: ${error.message}`);
  process.exitCode = 2;
}
