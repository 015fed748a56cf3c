#!/usr/bin/env python3
"""A Vigil heartbeat agent in plain Python 3.9+: `cryptography` for ed25519 and `rfc8785` for
RFC 8785 JCS (`pip install -r requirements.txt`). The whole contract (docs/agents.md):

  1. build the body: server_id, key_version, timestamp (RFC 3339, UTC) and what you report;
  2. take the body without `signature` and canonicalise it with JCS (RFC 8785);
  3. sign the UTF-8 bytes of "vigil-heartbeat-v1\\n" + that JSON with the server's ed25519 key;
  4. put the base64 signature in `signature` and POST the body to /v1/agent/heartbeat;
  5. send the next one after the answer's `next_heartbeat_seconds`.

Usage:
  vigil_agent.py vectors FILE                         check every conformance vector
  vigil_agent.py send --url URL --key FILE --server-id ID [--key-version N] [--once]

FILE for --key is `vigil keygen`'s file: the base64 32-byte seed on one line, or a PKCS#8 PEM
key (`vigil keygen --format pem`, or `openssl genpkey -algorithm ed25519`).
"""

import argparse
import base64
import hashlib
import json
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
)

DOMAIN = b"vigil-heartbeat-v1\n"


def read_key(path):
    """Reads a key file: a PKCS#8 PEM key or a base64 seed."""
    with open(path, "rb") as f:
        data = f.read().strip()
    if data.startswith(b"-----BEGIN"):
        key = load_pem_private_key(data, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} is not an ed25519 key")
        return key
    return Ed25519PrivateKey.from_private_bytes(base64.b64decode(data))


def public_key_bytes(key):
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def fingerprint(public_key):
    """`SHA256:` + unpadded base64 of SHA-256(public key), as the host shows it."""
    digest = base64.b64encode(hashlib.sha256(public_key).digest()).decode()
    return "SHA256:" + digest.rstrip("=")


def signed_message(body):
    """The exact bytes that are signed for `body` (its `signature` member left out)."""
    unsigned = {k: v for k, v in body.items() if k != "signature"}
    return DOMAIN + rfc8785.dumps(unsigned)


def sign_body(key, body):
    """`body` with its `signature` member set."""
    signature = base64.b64encode(key.sign(signed_message(body))).decode()
    return {**body, "signature": signature}


def check_vectors(path):
    with open(path, encoding="utf-8") as f:
        vectors = json.load(f)["vectors"]
    failed = 0
    for v in vectors:
        problems = []
        key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(v["private_key_seed_b64"]))
        public_key = public_key_bytes(key)
        if base64.b64encode(public_key).decode() != v["public_key_b64"]:
            problems.append("public key differs")
        if fingerprint(public_key) != v["fingerprint"]:
            problems.append("fingerprint differs")
        body = json.loads(v["request_body"])
        message = signed_message(body)
        if message.decode("utf-8") != v["signed_message_utf8"]:
            problems.append("signed message differs")
        if sign_body(key, body)["signature"] != v["signature_b64"]:
            problems.append("signature differs")
        try:
            key.public_key().verify(base64.b64decode(body["signature"]), message)
        except InvalidSignature:
            problems.append("the vector's signature does not verify")
        if problems:
            failed += 1
            print(f"FAIL {v['name']}: {', '.join(problems)}")
        else:
            print(f"ok   {v['name']}")
    print(f"{len(vectors) - failed} of {len(vectors)} vectors pass")
    return 0 if failed == 0 else 1


def now_rfc3339():
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def send(args):
    url = args.url.rstrip("/") + "/v1/agent/heartbeat"
    key = read_key(args.key)
    while True:
        body = sign_body(
            key,
            {
                "server_id": args.server_id,
                "key_version": args.key_version,
                "timestamp": now_rfc3339(),
                "status": "online",
            },
        )
        request = urllib.request.Request(
            url,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        wait = 30
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                text = answer.read().decode()
                print(answer.status, text, flush=True)
                wait = json.loads(text).get("next_heartbeat_seconds", wait)
        except urllib.error.HTTPError as refusal:
            # A refusal is RFC 9457 problem+json: its `code` says what to fix.
            print(refusal.code, refusal.read().decode(), flush=True)
            if args.once:
                return 1
            wait = int(refusal.headers.get("Retry-After") or wait)
        except (urllib.error.URLError, OSError) as error:
            print(f"host unreachable: {error}", file=sys.stderr, flush=True)
            if args.once:
                return 1
        if args.once:
            return 0
        time.sleep(wait)


def main():
    parser = argparse.ArgumentParser(description="A Vigil heartbeat agent.")
    commands = parser.add_subparsers(dest="command", required=True)
    vectors = commands.add_parser("vectors", help="check every conformance vector")
    vectors.add_argument("file")
    sender = commands.add_parser("send", help="send signed heartbeats")
    sender.add_argument("--url", required=True, help="the host, e.g. http://127.0.0.1:8080")
    sender.add_argument("--key", required=True, help="the private key file")
    sender.add_argument("--server-id", required=True)
    sender.add_argument("--key-version", type=int, default=1)
    sender.add_argument("--once", action="store_true", help="send one heartbeat and exit")
    args = parser.parse_args()
    if args.command == "vectors":
        return check_vectors(args.file)
    return send(args)


if __name__ == "__main__":
    sys.exit(main())
