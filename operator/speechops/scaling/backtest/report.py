"""The backtest's scoring and its report: each policy's `Result` (unserved stream-minutes,
pod-hours, streams cut, scale events), the ratios against the HPA and the oracle, where the
unserved time went, the band's coverage, and the table `speechops backtest` prints.
"""

from __future__ import annotations

import datetime
import math
import sys
from dataclasses import dataclass, field

import numpy as np

from speechops.scaling.backtest.options import Options
from speechops.scaling.backtest.trace import Trace, prepare

POLICIES = ("speechops", "hindsight-band", "holt-winters", "hpa", "oracle", "perfect-forecast")

# Targets from the issue, per trace and objective: the objective met, at no more than
# this many times the hindsight band's pod-hours, with no stream cut.
TARGET_PODHOURS_VS_HINDSIGHT = 1.05


@dataclass
class Result:
    policy: str
    unserved_stream_minutes: float = 0.0
    pod_hours: float = 0.0
    streams_cut: float = 0.0
    scale_events: int = 0
    demand_stream_minutes: float = 0.0
    headroom_sigmas: float | None = None     # the band's width: fixed, or where the budget left it
    # Per-tick series for the plot; not part of the JSON.
    capacity: np.ndarray | None = field(default=None, repr=False)
    forecast: np.ndarray | None = field(default=None, repr=False)
    upper: np.ndarray | None = field(default=None, repr=False)

    @property
    def availability(self) -> float | None:
        """The share of demanded stream-minutes that found ready capacity."""
        if self.demand_stream_minutes <= 0:
            return None
        return 1.0 - self.unserved_stream_minutes / self.demand_stream_minutes

    def summary(self) -> dict:
        a = self.availability
        return {"unserved_stream_minutes": round(float(self.unserved_stream_minutes), 3),
                "availability": None if a is None else round(float(a), 7),
                "pod_hours": round(float(self.pod_hours), 3), "streams_cut": round(float(self.streams_cut), 3),
                "scale_events": int(self.scale_events),
                **({} if self.headroom_sigmas is None else {"headroom_sigmas": round(float(self.headroom_sigmas), 3)})}



def progress(label: str, i: int, n: int, enabled: bool) -> None:
    if enabled and (i % 20000 == 0 or i == n - 1):
        width = 30
        done = int(width * (i + 1) / n)
        sys.stderr.write(f"\r{label:<14} [{'#' * done}{'.' * (width - done)}] {100 * (i + 1) / n:5.1f}%")
        if i == n - 1:
            sys.stderr.write("\n")
        sys.stderr.flush()



def band_outcomes(demand: np.ndarray, upper: np.ndarray, score_from: int,
                  ahead: int) -> tuple[np.ndarray, np.ndarray]:
    """Each scored tick's band top beside the demand `ahead` ticks later, what it was for:
    (demand that came, band top), aligned."""
    return demand[score_from + ahead:], upper[score_from:len(demand) - ahead]


def band_coverage(demand: np.ndarray, upper: np.ndarray, score_from: int, ahead: int) -> float | None:
    """Of the scored ticks' forecasts, the share whose demand `ahead` ticks later came at or
    below the band's top: what the operator exports live, over a day, as
    speechops_operator_forecast_band_coverage_ratio. None with nothing scored."""
    came, top = band_outcomes(demand, upper, score_from, ahead)
    return float(np.mean(came <= top)) if len(came) else None


def unserved_episodes(times: np.ndarray, demand: np.ndarray, capacity: np.ndarray, score_from: int,
                      opts: Options, lead: float, top: int = 3) -> list[dict]:
    """The largest stretches of unserved demand in the scored part, largest first.

    A stretch is a run of ticks with demand beyond capacity; runs less than one pod start
    apart are one episode (capacity that arrives mid-way does not end the event that
    called for it). Each says when it began (UTC), how long it lasted, its stream-minutes
    and their share of the total, and the demand `lead` seconds before against its peak:
    a jump no forecast saw reads as a large ratio."""
    short = np.maximum(demand - capacity, 0.0)
    short[:score_from] = 0.0
    total = float(short.sum())
    if total <= 0:
        return []
    ticks = np.flatnonzero(short > 0)
    join = max(int(math.ceil(opts.start_delay / opts.tick)), 1)
    breaks = np.flatnonzero(np.diff(ticks) > join)
    starts = np.concatenate(([ticks[0]], ticks[breaks + 1]))
    ends = np.concatenate((ticks[breaks], [ticks[-1]])) + 1
    lead_ticks = max(int(round(lead / opts.tick)), 1)
    episodes = []
    for lo, hi in zip(starts, ends):
        amount = float(short[lo:hi].sum())
        before = float(demand[max(lo - lead_ticks, 0)])
        episodes.append({
            "start": datetime.datetime.fromtimestamp(float(times[lo]), datetime.timezone.utc).isoformat(),
            "minutes": round((hi - lo) * opts.tick / 60.0, 2),
            "unserved_stream_minutes": round(amount * opts.tick / 60.0, 3),
            "share": round(amount / total, 4),
            "demand_before": round(before, 1), "demand_peak": round(float(demand[lo:hi].max()), 1),
        })
    episodes.sort(key=lambda e: -e["unserved_stream_minutes"])
    return episodes[:top]



def against_targets(ours: Result, hindsight: Result | None, objective: float) -> tuple[dict[str, float | None],
                                                                                   dict[str, bool]]:
    """The issue's targets for one policy's result (plain floats and bools: numpy's do not
    serialise to JSON): the availability achieved against the objective, pod-hours
    against the hindsight band's (the cheapest fixed band that met the objective on this
    trace; None when none did, so no cost is judged), and no stream cut."""
    achieved = ours.availability
    ratios = {"availability": None if achieved is None else float(achieved),
              "pod_hours_vs_hindsight": None if hindsight is None else float(ratio(ours.pod_hours,
                                                                                     hindsight.pod_hours))}
    checks = {
        "availability": bool(achieved is None or achieved >= objective),
        "pod_hours_vs_hindsight": bool(ratios["pod_hours_vs_hindsight"] is None
                                       or ratios["pod_hours_vs_hindsight"] <= TARGET_PODHOURS_VS_HINDSIGHT),
        "zero_cut": bool(ours.streams_cut == 0),
    }
    return ratios, checks


def ratio(a: float, b: float) -> float:
    if b <= 1e-9:
        return 0.0 if a == 0 else math.inf
    return a / b


def format_table(report: dict) -> str:
    r, q, ok = report["results"], report["ratios"], report["targets_met"]
    objective = report["objective"]
    lines = [f"{report['trace']}: {report['scored_ticks']} scored ticks of {report['ticks']}, "
             f"demand mean {report['mean_demand_streams']:.0f} peak {report['peak_demand_streams']:.0f} streams; "
             f"objective {100 * objective:g}% of stream-minutes served",
             f"  {'policy':<16} {'availability':>13} {'unserved st-min':>16} {'pod-hours':>12} {'cut':>8} "
             f"{'events':>7} {'sigmas':>7}"]
    src = report.get("source")
    if src:
        gap = "" if src["replay_gap"] is None else (
            f"; replayed, they are within {100 * src['replay_gap']:.0f}% of the streams the gateways counted "
            f"(mean absolute gap)")
        how = "Little's law" if src["duration_from"] == "littles_law" else "--duration"
        days = src["history_seconds"] / 86400
        lines.insert(1, f"  {days:g} day{'' if days == 1 else 's'} of arrivals from {src['prometheus']}, "
                        f"{src['arrivals_per_second']:g}/s; streams last {report['options']['duration']:.0f} s "
                        f"({how}){gap}")
    for name in POLICIES:
        s = r.get(name)
        if s is None:
            lines.append(f"  {name:<16} {'(no fixed band up to ' + str(report['hindsight_most']) + ' sigma meets it)':>50}")
            continue
        a = "-" if s["availability"] is None else f"{100 * s['availability']:.4f}%"
        sig = s.get("headroom_sigmas")
        lines.append(f"  {name:<16} {a:>13} {s['unserved_stream_minutes']:>16.1f} {s['pod_hours']:>12.1f} "
                     f"{s['streams_cut']:>8.0f} {s['scale_events']:>7d} {'' if sig is None else f'{sig:.2f}':>7}")
    achieved = q["availability"]
    vs = q["pod_hours_vs_hindsight"]
    lines.append(f"  speechops: availability {'-' if achieved is None else f'{100 * achieved:.4f}%'} "
                 f"(>= {100 * objective:g}%: {'ok' if ok['availability'] else 'MISSED'}), pod-hours "
                 f"{'- (no hindsight band)' if vs is None else f'{vs:.3f}'} x the hindsight band's "
                 f"(<= {TARGET_PODHOURS_VS_HINDSIGHT:g}: {'ok' if ok['pod_hours_vs_hindsight'] else 'MISSED'}), "
                 f"{q['pod_hours_vs_oracle']:.3f} x the oracle's, {q['pod_hours_vs_hpa']:.3f} x the HPA's, "
                 f"cut {r['speechops']['streams_cut']:.0f} ({'ok' if ok['zero_cut'] else 'MISSED'})")
    perfect = q["perfect_forecast_pod_hours_vs_oracle"]
    lines.append(f"  with a perfect forecast the policy pays {'inf' if perfect is None else f'{perfect:.3f}'} x the "
                 f"oracle's pod-hours (whole pods, scale-down delay, drains): the rest of the gap is forecast error")
    band = report["speechops_band"]
    if band["coverage"] is not None:
        lines.append(f"  speechops' band covered {100 * band['coverage']:.1f}% of the demand one lead time ahead")
    episodes = report.get("speechops_unserved_episodes") or []
    if episodes:
        lines.append("  speechops' largest unserved episodes:")
    for e in episodes:
        lines.append(f"    {e['start'][:16].replace('T', ' ')} UTC  {e['minutes']:g} min  "
                     f"{e['unserved_stream_minutes']:.1f} st-min ({100 * e['share']:.0f}%)  "
                     f"demand {e['demand_before']:.0f} -> {e['demand_peak']:.0f} streams")
    return "\n".join(lines)


def observed_fit(trace: Trace, opts: Options, times: np.ndarray, streams: np.ndarray) -> float | None:
    """How closely the replay follows the streams a pipeline really had: the mean absolute
    gap between the concurrency replayed from `trace` (every stream lasting opts.duration)
    and `streams` counted at `times`, as a share of their mean. The first duration is left
    out: the replay does not know the streams opened before the trace began."""
    tick_times, _, demand, _ = prepare(trace, opts)
    ends = tick_times + opts.tick            # demand[i]: streams open at the end of tick i
    keep = (times >= trace.times[0] + opts.duration) & (times <= ends[-1])
    if not keep.any() or streams[keep].mean() <= 0:
        return None
    return float(np.mean(np.abs(np.interp(times[keep], ends, demand) - streams[keep])) / streams[keep].mean())
