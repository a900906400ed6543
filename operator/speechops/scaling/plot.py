"""A PNG of a backtest: demand, the capacity speechops and the HPA kept ready, and
speechops' forecast with its band, drawn at the time each forecast was for.

matplotlib is the `plot` extra (`pip install 'speechops[plot]'`): the operator image does
not need it, only the backtest's `--plot` does.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np

# Long traces have hundreds of thousands of ticks: each line is reduced to one point per
# bucket, the bucket's maximum, so a one-tick spike (or a one-tick shortfall of capacity)
# stays visible.
BUCKETS = 2400


class PlotUnavailable(RuntimeError):
    pass


def require_matplotlib() -> None:
    """Fail before a long backtest, not after it, when --plot cannot be honoured."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotUnavailable("--plot needs matplotlib: pip install 'speechops[plot]'") from None


def _bucket_max(series: np.ndarray, buckets: int) -> np.ndarray:
    if len(series) <= buckets:
        return series
    edges = np.linspace(0, len(series), buckets + 1).astype(int)
    return np.maximum.reduceat(series, edges[:-1])


def _bucket_times(times: np.ndarray, buckets: int) -> np.ndarray:
    if len(times) <= buckets:
        return times
    return times[np.linspace(0, len(times), buckets + 1).astype(int)[:-1]]


def plot_backtest(path: str | Path, times: np.ndarray, demand: np.ndarray, results: dict, *, title: str,
                  scored_from: int, lead: float, subtitle: str = "") -> None:
    require_matplotlib()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    ours, hpa = results["speechops"], results["hpa"]

    def when(t: np.ndarray) -> np.ndarray:
        return np.array([datetime.datetime.fromtimestamp(x, datetime.timezone.utc) for x in t])

    x = when(_bucket_times(times, BUCKETS))
    # A forecast made at t is for t + lead: drawn there, the band can be read against the
    # demand it had to cover.
    x_ahead = when(_bucket_times(times + lead, BUCKETS))
    fig, ax = plt.subplots(figsize=(14, 5.5), dpi=100)
    ax.fill_between(x_ahead, _bucket_max(ours.forecast, BUCKETS), _bucket_max(ours.upper, BUCKETS),
                    color="#c8dcff", step="post", linewidth=0, label=f"speechops band (forecast to upper, {lead:g}s ahead)")
    ax.step(x_ahead, _bucket_max(ours.forecast, BUCKETS), where="post", color="#2856dc", linewidth=0.8,
            label="speechops forecast")
    ax.step(x, _bucket_max(hpa.capacity, BUCKETS), where="post", color="#dc3c28", linewidth=1.0,
            label="HPA ready capacity")
    ax.step(x, _bucket_max(ours.capacity, BUCKETS), where="post", color="#00a03c", linewidth=1.2,
            label="speechops ready capacity (incl. draining)")
    ax.step(x, _bucket_max(np.asarray(demand, dtype=float), BUCKETS), where="post", color="black",
            linewidth=0.9, label="demand (concurrent streams)")
    ax.axvspan(x[0], when(times[scored_from:scored_from + 1])[0], color="0.92", zorder=0,
               label="warm-up (not scored)")
    ax.set_ylim(bottom=0)
    ax.set_ylabel("streams")
    ax.set_xlabel("time (UTC)")
    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.grid(True, color="0.85", linewidth=0.5)
    ax.set_title(f"{title}\n{subtitle}" if subtitle else title, fontsize=10)
    ax.legend(loc="upper left", fontsize=8, framealpha=0.9)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
