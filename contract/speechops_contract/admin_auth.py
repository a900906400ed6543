"""The signed admin request: how the operator proves to a gateway that a POST /drain or
/undrain is its own (the operator signs, `speechops.admin_signing`; the gateway verifies,
`speechops_worker.gateway.admin_auth`).

The operator holds an Ed25519 private key; workers hold only its public key, which is not
secret (it travels in the pipeline's ConfigMap), so nothing secret is handed to the
pipeline namespaces and the operator needs no access to their Secrets. Each request
carries

    Authorization: Speechops-Signature key=<key id>,pod=<namespace>/<pod>,ts=<unix time>,nonce=<random>,sig=<signature>

where the signature covers the method, the path, the target pod, the time and the nonce.
A gateway accepts it only for itself (a pod IP reused by another pod does not drain the
wrong one), only within MAX_SKEW_S of its own clock, and each nonce only once (a captured
request cannot be replayed, not even inside the window).
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass

SCHEME = "Speechops-Signature"
VERSION = "speechops-admin-v1"
MAX_SKEW_S = 60.0
FIELDS = ("key", "pod", "ts", "nonce", "sig")

_TOKEN = re.compile(r"^[A-Za-z0-9._/-]{1,253}$")   # key ids, pod refs, times, base64url
_TIME = re.compile(r"^[0-9]{1,12}(\.[0-9]{1,9})?$")


@dataclass(frozen=True)
class SignedRequest:
    key_id: str
    pod: str            # "<namespace>/<pod name>"
    ts: str             # unix seconds as sent (signed as text, so no float formatting drifts)
    nonce: str
    signature: bytes


class MalformedSignature(ValueError):
    pass


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def key_id(raw_public_key: bytes) -> str:
    """A short, stable name of a public key (not secret): which key signed, in logs and errors."""
    return b64url(hashlib.sha256(raw_public_key).digest()[:9])


def pod_ref(namespace: str, pod: str) -> str:
    return f"{namespace}/{pod}"


def message(method: str, path: str, pod: str, ts: str, nonce: str) -> bytes:
    """The bytes signed: one field a line, behind a version tag."""
    return "\n".join((VERSION, method.upper(), path, pod, ts, nonce)).encode("ascii")


def header(req: SignedRequest) -> str:
    return (f"{SCHEME} key={req.key_id},pod={req.pod},ts={req.ts},nonce={req.nonce},"
            f"sig={b64url(req.signature)}")


def parse(value: str) -> SignedRequest:
    """The fields of an Authorization header; MalformedSignature says what is wrong."""
    scheme, _, params = value.strip().partition(" ")
    if scheme.lower() != SCHEME.lower():
        raise MalformedSignature(f"the Authorization scheme is not {SCHEME}")
    fields: dict[str, str] = {}
    for part in params.split(","):
        name, sep, val = part.strip().partition("=")
        if not sep or name not in FIELDS or name in fields or not _TOKEN.match(val):
            raise MalformedSignature(f"bad field {name!r}: expected {', '.join(f'{f}=' for f in FIELDS)}")
        fields[name] = val
    if missing := [f for f in FIELDS if f not in fields]:
        raise MalformedSignature(f"missing {', '.join(missing)}")
    if not _TIME.match(fields["ts"]):
        raise MalformedSignature("ts is not unix seconds")
    try:
        signature = unb64url(fields["sig"])
    except ValueError:
        raise MalformedSignature("sig is not base64url") from None
    return SignedRequest(fields["key"], fields["pod"], fields["ts"], fields["nonce"], signature)
