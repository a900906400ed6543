"""The operator's admin key: it signs the scaler's POST /drain and /undrain to the gateways
(the request format is `speechops_contract.admin_auth`), and its public key goes into every
pipeline's ConfigMap, where the gateways read it.

The private key is a PEM Ed25519 key in the file $SPEECHOPS_ADMIN_KEY_FILE, which the
chart mounts read-only from a Secret in the operator's own namespace (generated once at
install, kept on upgrades), so every replica of a peered operator signs with the same key.
A file that is set but cannot be read stops the operator at start. Without the variable
(an operator run by hand) the process makes a key of its own and says so: its public key
reaches the workers with the next reconcile of each pipeline, and a restart changes it.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import time
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from speechops_contract import admin_auth, names

log = logging.getLogger("speechops.operator")


class AdminKeyError(ValueError):
    pass


@dataclass(frozen=True)
class AdminSigner:
    key: Ed25519PrivateKey
    source: str          # the file it came from, or "generated"

    @property
    def public_pem(self) -> str:
        return self.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")

    @property
    def key_id(self) -> str:
        return admin_auth.key_id(self.key.public_key().public_bytes(serialization.Encoding.Raw,
                                                                    serialization.PublicFormat.Raw))

    def authorization(self, method: str, path: str, namespace: str, pod: str, now: float | None = None) -> str:
        """The Authorization header for one request to one pod."""
        ts = f"{time.time() if now is None else now:.3f}"
        pod_ref = admin_auth.pod_ref(namespace, pod)
        nonce = admin_auth.b64url(secrets.token_bytes(12))
        signature = self.key.sign(admin_auth.message(method, path, pod_ref, ts, nonce))
        return admin_auth.header(admin_auth.SignedRequest(self.key_id, pod_ref, ts, nonce, signature))


def load(path: str) -> AdminSigner:
    try:
        data = open(path, "rb").read()
    except OSError as exc:
        raise AdminKeyError(f"cannot read the admin key {path}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        # The error text may quote the file: say only what is wrong.
        raise AdminKeyError(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise AdminKeyError(f"{path} holds a {type(key).__name__.removeprefix('_')}, not an Ed25519 key")
    return AdminSigner(key, path)


def from_environment(env: os._Environ | dict | None = None) -> AdminSigner:
    """The key named by $SPEECHOPS_ADMIN_KEY_FILE, or a new one for this process (warned)."""
    env = os.environ if env is None else env
    path = env.get(names.ENV_ADMIN_KEY_FILE)
    if path:
        signer = load(path)
        log.info("admin key %s from %s: drain and undrain requests are signed with it", signer.key_id, path)
        return signer
    signer = AdminSigner(Ed25519PrivateKey.generate(), "generated")
    log.warning("%s is not set: generated admin key %s for this process. Workers learn its public key from their "
                "pipeline's ConfigMap at the next reconcile; a restart or another replica makes a different one, and "
                "gateways refuse drains until the kubelet has updated the mounted ConfigMap (about a minute). Give "
                "the operator a key file to keep one key (the chart does).", names.ENV_ADMIN_KEY_FILE, signer.key_id)
    return signer


@functools.cache
def process_signer() -> AdminSigner:
    """This process's signer, made once: the reconciler publishes its public key and the
    scaler signs with it, so the two never disagree."""
    return from_environment()
