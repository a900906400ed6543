"""Who may POST /drain and /undrain: the operator, by signature (the format is
`speechops_contract.admin_auth`), or the pod itself, through a Unix socket.

- Over TCP, a request needs the operator's signature: made with a key whose public half
  is in the trusted keys file (the pipeline's ConfigMap, mounted; re-read when the kubelet
  swaps it, so a new operator key is picked up without a restart), for this pod, within
  MAX_SKEW_S of this clock, with a nonce not seen before.
- Over the Unix socket (the preStop hook): allowed. Only processes that can open the
  socket file in the gateway container's own /tmp reach it; a loopback TCP peer is not
  trusted in a pod, because a service-mesh sidecar forwards remote callers from 127.0.0.1.
- With no keys file configured at all (`speechops up`, no operator): a loopback peer is
  allowed and everyone else refused; a gateway given a keys file never falls back to that.

Refusals are 401 with the reason in the body and counted by reason; neither a signature
nor any key material is logged, only key ids (fingerprints of public keys).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from speechops_contract import admin_auth
from speechops_worker.gateway.file_watch import RECHECK_S, FileWatch

log = logging.getLogger("speechops.gateway.admin")

_PEM_BLOCK = re.compile(r"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.S)


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str           # how it was allowed (signed, socket, loopback) or the refusal's metric label
    message: str = ""


def read_public_keys(path: Path) -> dict[str, Ed25519PublicKey]:
    """key id -> key, for every Ed25519 public key (PEM) in the file. OSError when unreadable."""
    keys: dict[str, Ed25519PublicKey] = {}
    for block in _PEM_BLOCK.findall(path.read_text(encoding="ascii", errors="replace")):
        try:
            key = serialization.load_pem_public_key(block.encode("ascii"))
        except ValueError:
            log.warning("admin keys: a PEM block in %s is not a public key; skipped", path)
            continue
        if isinstance(key, Ed25519PublicKey):
            keys[admin_auth.key_id(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))] = key
        else:
            log.warning("admin keys: a %s in %s is not Ed25519; skipped", type(key).__name__.removeprefix("_"), path)
    return keys


class AdminAuth:
    def __init__(self, public_keys: str | os.PathLike | None, namespace: str, pod: str,
                 recheck_s: float = RECHECK_S, clock=time.time) -> None:
        self.path = Path(public_keys) if public_keys else None
        self.pod = admin_auth.pod_ref(namespace, pod)
        self.watch = FileWatch(self.path, recheck_s=recheck_s, look_now=False) if self.path else None
        self.clock = clock
        self.keys: dict[str, Ed25519PublicKey] = {}
        self._nonces: dict[str, float] = {}     # nonce -> when it can no longer pass the time check
        self.refresh(force=True)

    def refresh(self, force: bool = False) -> None:
        """Re-reads the keys file when it changed (at most once per recheck_s). A file that is
        missing or unreadable keeps the keys read before (the kubelet swaps files atomically)."""
        if self.watch is None:
            return
        first = self.watch.seen is None
        signature = self.watch.changed(force)
        if signature is None:
            return
        self.watch.seen = signature   # unreadable too: looked at again once it changes
        try:
            keys = read_public_keys(self.path)
        except OSError as exc:
            if first or force:
                log.warning("admin keys: cannot read %s (%s): drain and undrain over TCP are refused until the "
                            "operator's public key is there", self.path, exc.strerror)
            return
        if set(keys) != set(self.keys):
            log.info("admin keys: %s from %s", ", ".join(sorted(keys)) or "none", self.path)
        self.keys = keys

    def check(self, method: str, path: str, authorization: str | None, *, unix_socket: bool,
              peer: str | None) -> Verdict:
        if unix_socket:
            return Verdict(True, "socket")
        if self.path is None:
            if _loopback(peer):
                return Verdict(True, "loopback")
            return Verdict(False, "not_local", "this gateway has no operator key (--admin-public-keys): "
                                               "drain and undrain are taken from this machine only")
        if not authorization:
            return Verdict(False, "missing_signature",
                           f"drain and undrain need the operator's signature ({admin_auth.SCHEME})")
        try:
            req = admin_auth.parse(authorization)
        except admin_auth.MalformedSignature as exc:
            return Verdict(False, "malformed_signature", f"malformed {admin_auth.SCHEME} header: {exc}")
        if req.pod != self.pod:
            return Verdict(False, "wrong_pod", f"signed for pod {req.pod}, this is {self.pod}")
        now = self.clock()
        skew = now - float(req.ts)
        if abs(skew) > admin_auth.MAX_SKEW_S:
            return Verdict(False, "stale_signature", f"signed {skew:+.0f}s from this gateway's clock "
                                                     f"(at most {admin_auth.MAX_SKEW_S:g}s either way)")
        self.refresh()
        key = self.keys.get(req.key_id)
        if key is None:
            known = ", ".join(sorted(self.keys)) or f"none yet ({self.path} has no public key)"
            return Verdict(False, "unknown_key", f"signed with key {req.key_id}; this gateway trusts {known}")
        try:
            key.verify(req.signature, admin_auth.message(method, path, req.pod, req.ts, req.nonce))
        except InvalidSignature:
            return Verdict(False, "bad_signature", f"the signature does not match {method} {path} for {req.pod}")
        self._forget_nonces(now)
        if req.nonce in self._nonces:
            return Verdict(False, "replayed_signature", "this signed request was already used")
        # Only validly signed requests are remembered (the operator's few a minute), each
        # until its time check would refuse it anyway.
        self._nonces[req.nonce] = float(req.ts) + admin_auth.MAX_SKEW_S
        return Verdict(True, "signed")

    def _forget_nonces(self, now: float) -> None:
        for nonce in [n for n, until in self._nonces.items() if until < now]:
            del self._nonces[nonce]


def _loopback(peer: str | None) -> bool:
    try:
        address = ipaddress.ip_address(peer or "")
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback
