"""Self-signed certificates for tests (the openssl CLI), laid out as the kubelet mounts a
kubernetes.io/tls Secret: tls.crt and tls.key symlinks into a `..data` directory that a
rotation swaps atomically."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path


def make_cert(directory: Path, common_name: str) -> tuple[Path, Path]:
    """A self-signed EC certificate for 127.0.0.1 and localhost: (cert, key)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "tls.crt", directory / "tls.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "2", "-subj", f"/CN={common_name}", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True)
    return cert, key


def mount_secret(mount: Path, files: dict[str, bytes]) -> None:
    """Writes `files` the way the kubelet updates a Secret volume: a new timestamped
    directory, then an atomic rename of the `..data` symlink onto it."""
    mount.mkdir(parents=True, exist_ok=True)
    version = mount / f"..{uuid.uuid4().hex}"
    version.mkdir()
    for name, data in files.items():
        (version / name).write_bytes(data)
    tmp = mount / "..data_tmp"
    tmp.symlink_to(version.name)
    os.replace(tmp, mount / "..data")
    for name in files:
        link = mount / name
        if not link.is_symlink():
            link.symlink_to(f"..data/{name}")
    for name in os.listdir(mount):
        if not name.startswith("..") and name not in files:
            (mount / name).unlink()
