"""A PNG of a backtest: demand, the capacity speechops and the HPA kept ready, and
speechops' forecast with its band drawn at the time each forecast was for; the whole trace
above, the scored day where speechops fell shortest below.

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


def _bucket_starts(n: int, buckets: int) -> np.ndarray:
    return np.linspace(0, n, buckets + 1).astype(int)[:-1]


def _bucket_max(series: np.ndarray, buckets: int) -> np.ndarray:
    return series if len(series) <= buckets else np.maximum.reduceat(series, _bucket_starts(len(series), buckets))


def _bucket_times(times: np.ndarray, buckets: int) -> np.ndarray:
    return times if len(times) <= buckets else times[_bucket_starts(len(times), buckets)]


def worst_day(times: np.ndarray, demand: np.ndarray, capacity: np.ndarray, scored_from: int) -> slice:
    """The scored 24 hours where speechops left the most demand unserved (the peak demand's
    24 hours if it left none): the part of a long trace worth seeing tick by tick."""
    span = int(round(86400.0 / max(float(np.median(np.diff(times))), 1e-9))) if len(times) > 1 else 1
    if len(times) - scored_from <= span:
        return slice(scored_from, len(times))
    short = np.maximum(np.asarray(demand, float) - np.asarray(capacity, float), 0.0)[scored_from:]
    weight = short if short.any() else np.asarray(demand, float)[scored_from:]
    # Sums over every window of `span` ticks, by a running total (np.convolve multiplies
    # out every window: 0.8 s against 0.02 s on a two-month trace).
    total = np.concatenate(([0.0], np.cumsum(weight)))
    sums = total[span:] - total[:-span]
    start = scored_from + int(np.argmax(sums))
    return slice(start, start + span)


def plot_backtest(path: str | Path, times: np.ndarray, demand: np.ndarray, results: dict, *, title: str,
                  scored_from: int, lead: float, subtitle: str = "") -> None:
    """Two panels: the whole trace (each line at its maximum per pixel column) and, tick by
    tick, the scored day where speechops fell shortest."""
    require_matplotlib()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    ours, hpa = results["speechops"], results["hpa"]
    demand = np.asarray(demand, dtype=float)

    def when(t: np.ndarray) -> np.ndarray:
        return np.array([datetime.datetime.fromtimestamp(x, datetime.timezone.utc) for x in t])

    def draw(ax, part: slice, buckets: int) -> None:
        def cut(series):
            return _bucket_max(np.asarray(series, dtype=float)[part], buckets)
        x = when(_bucket_times(times[part], buckets))
        # A forecast made at t is for t + lead: drawn there, the band can be read against
        # the demand it had to cover.
        ahead = when(_bucket_times(times[part] + lead, buckets))
        ax.fill_between(ahead, cut(ours.forecast), cut(ours.upper), color="#c8dcff", step="post", linewidth=0,
                        label=f"speechops band (forecast to upper, drawn {lead:g}s ahead)")
        ax.step(ahead, cut(ours.forecast), where="post", color="#2856dc", linewidth=0.8, label="speechops forecast")
        ax.step(x, cut(hpa.capacity), where="post", color="#dc3c28", linewidth=1.0, label="HPA ready capacity")
        ax.step(x, cut(ours.capacity), where="post", color="#00a03c", linewidth=1.2,
                label="speechops ready capacity (incl. draining)")
        ax.step(x, cut(demand), where="post", color="black", linewidth=0.9, label="demand (concurrent streams)")
        if part.start < scored_from:
            ax.axvspan(x[0], when(times[scored_from:scored_from + 1])[0], color="0.92", zorder=0,
                       label="warm-up (not scored)")
        ax.set_ylim(bottom=0)
        ax.set_ylabel("streams")
        locator = mdates.AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        ax.grid(True, color="0.85", linewidth=0.5)

    day = worst_day(times, demand, ours.capacity, scored_from)
    fig, (whole, detail) = plt.subplots(2, 1, figsize=(14, 9), dpi=100)
    draw(whole, slice(0, len(times)), BUCKETS)
    whole.set_title(f"{title}\n{subtitle}" if subtitle else title, fontsize=10)
    whole.legend(loc="upper left", fontsize=8, framealpha=0.9)
    draw(detail, day, BUCKETS)
    short = float(np.maximum(demand[day] - np.asarray(ours.capacity)[day], 0.0).sum())
    if day == slice(scored_from, len(times)):
        detail.set_title("the scored part, tick by tick", fontsize=9)
    else:
        detail.set_title("scored day with the most unserved demand, tick by tick" if short > 0
                         else "scored day with the peak demand, tick by tick (speechops left none unserved)",
                         fontsize=9)
    detail.set_xlabel("time (UTC)")
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def write_plot(path: str | Path, report: dict) -> None:
    """The PNG of one backtest (needs the `plot` extra); takes the series out of the report."""
    series = report.pop("_series")
    q = report["ratios"]
    vs = q["pod_hours_vs_hindsight"]
    subtitle = ("speechops: {:.4f}% served (objective {:g}%), pod-hours {} x the hindsight band's, {:.3f} x the "
                "oracle's, {:.0f} streams cut"
                .format(100 * q["availability"], 100 * report["objective"], "-" if vs is None else f"{vs:.3f}",
                        q["pod_hours_vs_oracle"], report["results"]["speechops"]["streams_cut"]))
    plot_backtest(path, series["times"], series["demand"], series["results"], title=report["trace"],
                  scored_from=series["scored_from"], lead=series["lead"], subtitle=subtitle)
    report["plot"] = str(path)
