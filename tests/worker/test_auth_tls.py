"""API keys (files, mounted Secrets, rotation, headers) and TLS certificate rotation on a real socket."""

import asyncio
import logging
import ssl

import pytest

from speechops_worker.gateway import auth, tls
from tests.worker.tlskit import make_cert, mount_secret


def test_keys_from_a_file(tmp_path):
    f = tmp_path / "keys.txt"
    f.write_text("# team keys\nsk-alpha\n\n  sk-beta  \n")
    store = auth.KeyStore(f)
    assert len(store) == 2
    assert store.check("sk-alpha") == ("keys.txt:2", None)
    assert store.check("sk-beta") == ("keys.txt:4", None)
    assert store.check("sk-gamma") == (None, auth.INVALID)
    assert store.check(None) == (None, auth.MISSING)
    assert store.check("") == (None, auth.MISSING)
    assert store.check("sk-alph") == (None, auth.INVALID)


def test_keys_from_a_mounted_secret_reload_on_rotation(tmp_path, caplog):
    mount = tmp_path / "secret"
    mount_secret(mount, {"team-a": b"sk-a-1\n", "keys": b"sk-x\nsk-y\n"})
    store = auth.KeyStore(mount, recheck_s=0)
    assert store.check("sk-a-1") == ("team-a", None)
    assert store.check("sk-y") == ("keys:2", None)
    caplog.set_level(logging.DEBUG)
    mount_secret(mount, {"team-a": b"sk-a-2\n", "keys": b"sk-x\n"})
    assert store.check("sk-a-1") == (None, auth.INVALID)
    assert store.check("sk-a-2") == ("team-a", None)
    assert store.check("sk-y") == (None, auth.INVALID)
    assert store.reloads == 1
    # Emptied on purpose: nobody gets in (fail closed), and it says so.
    mount_secret(mount, {"keys": b"# revoked\n"})
    assert store.check("sk-x") == (None, auth.INVALID)
    assert "holds none" in caplog.text
    for key in ("sk-a-1", "sk-a-2", "sk-x", "sk-y"):
        assert key not in caplog.text


def test_unreadable_keys_keep_the_last_good_set(tmp_path):
    f = tmp_path / "keys"
    f.write_text("sk-1\n")
    store = auth.KeyStore(f, recheck_s=0)
    f.unlink()
    assert store.check("sk-1") == ("keys", None)
    f.write_bytes(b"\xff\xfe not utf-8")
    assert store.check("sk-1") == ("keys", None)
    f.write_text("sk-2\n")
    assert store.check("sk-2") == ("keys", None) and store.check("sk-1")[0] is None


def test_recheck_is_throttled(tmp_path):
    f = tmp_path / "keys"
    f.write_text("sk-1\n")
    store = auth.KeyStore(f, recheck_s=3600)
    f.write_text("sk-2\n")
    assert store.check("sk-1") == ("keys", None)       # not looked at again yet
    assert store.refresh(force=True) and store.check("sk-2") == ("keys", None)


def test_no_keys_at_start_is_an_error(tmp_path):
    (tmp_path / "empty").write_text("# nothing\n")
    with pytest.raises(auth.KeyFileError, match="no API keys"):
        auth.KeyStore(tmp_path / "empty")
    with pytest.raises(auth.KeyFileError, match="cannot read"):
        auth.KeyStore(tmp_path / "missing")


def test_credentials_from_headers():
    assert auth.credential({"authorization": "Bearer sk-1"}) == auth.Credential("sk-1", None)
    assert auth.credential({"Authorization": "bearer   sk-1 "}) == auth.Credential("sk-1", None)
    assert auth.credential({"authorization": "Basic abc"}) == auth.Credential(None, None)
    # A browser: the key rides in a subprotocol, which is never the one answered.
    browser = {"sec-websocket-protocol": "realtime, openai-insecure-api-key.sk-2, openai-beta.realtime-v1"}
    assert auth.credential(browser) == auth.Credential("sk-2", "realtime")
    assert auth.credential({"sec-websocket-protocol": "openai-insecure-api-key."}) == auth.Credential(None, None)
    assert auth.credential({}) == auth.Credential(None, None)


# ---------------------------------------------------------------- TLS


async def _peer_cn(port: int, cafile, server_hostname: str | None) -> str:
    ctx = ssl.create_default_context(cafile=str(cafile))
    if server_hostname is None:
        ctx.check_hostname = False          # no SNI: connecting by address, as many clients do
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=server_hostname)
    cert = writer.get_extra_info("peercert")
    line = await reader.readline()
    writer.close()
    assert line == b"hello\n"
    return dict(x[0] for x in cert["subject"])["commonName"]


def test_certificate_rotation_serves_new_connections_without_restart(tmp_path):
    old = make_cert(tmp_path / "old", "old-cert")
    new = make_cert(tmp_path / "new", "new-cert")
    mount = tmp_path / "secret"
    mount_secret(mount, {"tls.crt": old[0].read_bytes(), "tls.key": old[1].read_bytes()})
    reloader = tls.CertReloader(*tls.paths_in(mount), recheck_s=0)

    async def main():
        async def hello(reader, writer):
            writer.write(b"hello\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(hello, "127.0.0.1", 0, ssl=reloader.server_context)
        port = server.sockets[0].getsockname()[1]
        try:
            assert await _peer_cn(port, old[0], "localhost") == "old-cert"
            assert await _peer_cn(port, old[0], None) == "old-cert"
            mount_secret(mount, {"tls.crt": new[0].read_bytes(), "tls.key": new[1].read_bytes()})
            assert await _peer_cn(port, new[0], "localhost") == "new-cert"
            assert await _peer_cn(port, new[0], None) == "new-cert"
            with pytest.raises(ssl.SSLCertVerificationError):
                await _peer_cn(port, old[0], "localhost")      # the old cert is gone
            # Half a rotation (new cert, old key): the previous pair keeps serving.
            mount_secret(mount, {"tls.crt": old[0].read_bytes(), "tls.key": new[1].read_bytes()})
            assert await _peer_cn(port, new[0], "localhost") == "new-cert"
            assert reloader.reloads == 1
        finally:
            server.close()

    asyncio.run(main())


def test_a_bad_pair_at_start_is_an_error(tmp_path):
    a = make_cert(tmp_path / "a", "a")
    b = make_cert(tmp_path / "b", "b")
    with pytest.raises(ValueError, match="cannot load TLS certificate"):
        tls.CertReloader(a[0], b[1])
