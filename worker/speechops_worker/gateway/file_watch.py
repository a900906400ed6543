"""Whether mounted files changed: API keys, the TLS pair and the operator's admin key all
come from Secrets or ConfigMaps the kubelet updates in place, and each is re-read when
its files change, looked at no more than once per `recheck_s` (a stat per connection
would cost more than the check saves)."""

from __future__ import annotations

import os
import time
from pathlib import Path

RECHECK_S = 1.0


def signature(*paths: Path) -> tuple:
    """What changes when the files do (a directory: each file in it): the kubelet's symlink
    swap changes the targets' inodes. () when any is missing or unreadable."""
    try:
        out = []
        for path in paths:
            for p in [path] if not path.is_dir() else sorted(path.iterdir()):
                st = p.stat()
                out.append((p.name, st.st_ino, st.st_mtime_ns, st.st_size))
        return tuple(out)
    except OSError:
        return ()


class FileWatch:
    """`changed()` gives the files' new signature when it differs from `seen`, at most once
    per `recheck_s`; the caller sets `seen` once it has read what it wanted from them (so
    a read that failed is tried again at the next look)."""

    def __init__(self, *paths: str | os.PathLike, recheck_s: float = RECHECK_S, look_now: bool = True) -> None:
        self.paths = tuple(Path(p) for p in paths)
        self.recheck_s = recheck_s
        # look_now: the caller reads the files at once, so they count as seen now.
        self._looked = time.monotonic() if look_now else -float("inf")
        self.seen: tuple | None = signature(*self.paths) if look_now else None

    def changed(self, force: bool = False) -> tuple | None:
        now = time.monotonic()
        if not force and now - self._looked < self.recheck_s:
            return None
        self._looked = now
        current = signature(*self.paths)
        return None if current == self.seen else current
