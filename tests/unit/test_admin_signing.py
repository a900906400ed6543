"""The operator's admin key: loaded from the file the chart mounts, refused with a clear
error (never its contents) when unusable, made for the process when none is given; and
the request it signs is the one the gateway's verifier accepts."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from speechops_contract import admin_auth, names
from speechops import admin_signing, operator_main


def pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def test_the_key_file_is_loaded_and_its_public_half_published(tmp_path):
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "ed25519.pem"
    path.write_bytes(pem(key))
    signer = admin_signing.from_environment({names.ENV_ADMIN_KEY_FILE: str(path)})
    assert signer.public_pem.startswith("-----BEGIN PUBLIC KEY-----")
    assert signer.key_id == admin_auth.key_id(key.public_key().public_bytes(serialization.Encoding.Raw,
                                                                             serialization.PublicFormat.Raw))
    # Two replicas mounting the same Secret sign with the same key.
    assert admin_signing.from_environment({names.ENV_ADMIN_KEY_FILE: str(path)}).public_pem == signer.public_pem
    header = admin_auth.parse(signer.authorization("POST", "/drain", "speech", "pod-a", now=1_800_000_000.0))
    assert (header.pod, header.ts, header.key_id) == ("speech/pod-a", "1800000000.000", signer.key_id)
    key.public_key().verify(header.signature, admin_auth.message("POST", "/drain", header.pod, header.ts,
                                                                 header.nonce))


def test_an_unusable_key_file_is_refused_without_quoting_it(tmp_path):
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWJ1dC1icm9rZW4=\n-----END PRIVATE KEY-----\n")
    with pytest.raises(admin_signing.AdminKeyError, match="not an unencrypted PEM private key") as err:
        admin_signing.load(str(garbage))
    assert "c2VjcmV0" not in str(err.value)
    wrong = tmp_path / "ec.pem"
    wrong.write_bytes(pem(ec.generate_private_key(ec.SECP256R1())))
    with pytest.raises(admin_signing.AdminKeyError, match="not an Ed25519 key"):
        admin_signing.load(str(wrong))
    with pytest.raises(admin_signing.AdminKeyError, match="cannot read the admin key"):
        admin_signing.load(str(tmp_path / "missing.pem"))


def test_the_operator_does_not_start_with_a_key_file_it_cannot_use(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(names.ENV_ADMIN_KEY_FILE, str(tmp_path / "missing.pem"))
    admin_signing.process_signer.cache_clear()
    try:
        assert operator_main.main(["-A"]) == 2
    finally:
        admin_signing.process_signer.cache_clear()
    assert "cannot read the admin key" in capsys.readouterr().err


def test_without_a_key_file_the_process_makes_one_and_warns(caplog):
    a, b = admin_signing.from_environment({}), admin_signing.from_environment({})
    assert a.key_id != b.key_id and a.source == "generated"
    assert "a restart or another replica makes a different one" in caplog.text
