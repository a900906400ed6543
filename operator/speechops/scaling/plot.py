"""A PNG of a backtest: demand, speechops capacity, forecast and band, HPA capacity.

Written with numpy and zlib only, so the backtest needs no plotting library: a plot is a
few polylines on a white canvas, and PNG is a zlib stream with a header.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

WIDTH, HEIGHT, MARGIN = 1200, 500, 20
COLOURS = {
    "band": (200, 220, 255),      # speechops upper band, filled down to the forecast
    "demand": (0, 0, 0),
    "forecast": (40, 90, 220),
    "speechops": (0, 160, 60),
    "hpa": (220, 60, 40),
}


def _png(pixels: np.ndarray) -> bytes:
    h, w, _ = pixels.shape
    raw = b"".join(b"\x00" + pixels[y].tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def _columns(series: np.ndarray, width: int) -> np.ndarray:
    """Max per pixel column, so short spikes stay visible on long traces."""
    edges = np.linspace(0, len(series), width + 1).astype(int)
    return np.array([series[a:max(b, a + 1)].max() for a, b in zip(edges[:-1], edges[1:])])


def plot_backtest(path: str | Path, times: np.ndarray, demand: np.ndarray, results: dict, title: str = "") -> None:
    ours, hpa = results["speechops"], results["hpa"]
    plot_w, plot_h = WIDTH - 2 * MARGIN, HEIGHT - 2 * MARGIN
    lines = {"demand": demand, "forecast": ours.forecast, "speechops": ours.capacity, "hpa": hpa.capacity}
    cols = {k: _columns(np.asarray(v, dtype=float), plot_w) for k, v in lines.items() if v is not None}
    upper = _columns(np.asarray(ours.upper, dtype=float), plot_w)
    top = max(max(c.max() for c in cols.values()), upper.max(), 1.0) * 1.05
    img = np.full((HEIGHT, WIDTH, 3), 255, dtype=np.uint8)

    def y_of(v: np.ndarray) -> np.ndarray:
        return (MARGIN + plot_h - 1 - np.clip(v / top, 0, 1) * (plot_h - 1)).astype(int)

    x = np.arange(plot_w) + MARGIN
    lo, hi = y_of(cols["forecast"]), y_of(upper)
    for xi, a, b in zip(x, hi, lo):
        img[a:b + 1, xi] = COLOURS["band"]
    for name in ("hpa", "speechops", "forecast", "demand"):
        ys = y_of(cols[name])
        for i in range(plot_w):
            a, b = sorted((ys[i], ys[i - 1] if i else ys[i]))
            img[a:b + 1, x[i]] = COLOURS[name]
    img[MARGIN + plot_h, MARGIN:MARGIN + plot_w] = 0        # axes
    img[MARGIN:MARGIN + plot_h, MARGIN] = 0
    Path(path).write_bytes(_png(img))
