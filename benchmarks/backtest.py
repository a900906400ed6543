"""Backtest every shared trace against each tier's default availability objective and
print, per trace and objective, speechops (its band moved by the error budget) beside the
hindsight band, the HPA, Holt-Winters and the oracle, all run in the same process.

    python benchmarks/backtest.py [--traces DIR] [--only NAME,...] [--json] [--plots DIR]
                                  [--durations fixed|exponential] [--no-opening-hours]

Targets, per trace and objective (realtime 99.99%, interactive 99.9%, batch 99% of the
demanded stream-minutes served), tuned once: achieved availability >= the objective;
pod-hours <= 1.05x the hindsight band's (the cheapest fixed band width that, tuned on that
trace after the fact, meets the same objective); 0 streams cut. A synthetic opening-hours
trace (weekdays 08:00-18:00, demand 0 -> 65 streams within two minutes, nothing at night
or at weekends) joins the shared ones unless --no-opening-hours. The exit code is 0 either
way: this prints figures. The report is docs/benchmarks/backtest[-ONLY...][-exponential]-DATE.md,
so the long traces (--only nasa,worldcup) and each stream-length model keep their own.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "contract"), str(REPO / "operator")]

from speechops_contract.profiles import PROFILES  # noqa: E402
from speechops.scaling.backtest import options, plot, run, trace  # noqa: E402
from speechops.scaling.backtest import report as scores  # noqa: E402  (benchmarks/report.py is `report`)

TIERS = ("batch", "interactive", "realtime")


def opening_hours_trace(path: Path, weeks: int = 4, seed: int = 7) -> Path:
    """Per-minute arrivals of a call centre open on weekdays 08:00-18:00: demand rises
    from 0 to 65 streams of 240 s within two minutes of opening (65 / 4 arrivals a minute,
    Poisson, over a noisy daily level), falls to 0 at closing."""
    rng = np.random.default_rng(seed)
    start = 4 * 86400                      # 1970-01-05, a Monday
    t = start + 60 * np.arange(weeks * 7 * 1440)
    minute = (t % 86400) // 60
    weekday = ((t // 86400) + 3) % 7
    open_ = (weekday < 5) & (minute >= 8 * 60) & (minute < 18 * 60)
    daily = rng.uniform(0.85, 1.15, size=weeks * 7).repeat(1440)
    rate = np.where(open_, 65 / 4 * daily * (1 + 0.3 * np.sin(np.pi * (minute - 480) / 600)), 0.0)
    rate[open_ & (minute == 8 * 60)] *= 1.5          # the queue that waited for opening
    with path.open("w") as fh:
        fh.write("timestamp,arrivals\n")
        for ti, v in zip(t.tolist(), rng.poisson(rate).tolist()):
            fh.write(f"{ti},{v}\n")
    return path


def run_one(path: str, plots: str | None, durations: str) -> list[dict]:
    """Every tier's objective on one trace; the baselines and the hindsight band's runs
    are shared between them."""
    started = time.monotonic()
    tr = trace.load_trace(path)
    base = options.Options(durations=durations)
    times, arrivals, demand, score_from = trace.prepare(tr, base)
    hindsight = run.Hindsight(times, arrivals, demand, base, score_from)
    baselines = run.run_baselines(times, arrivals, demand, base, score_from)
    reports = []
    for tier in TIERS:
        p = PROFILES[tier]
        opts = options.Options(durations=durations, availability=p.availability, headroom_sigmas=p.headroom_sigmas)
        report = run.backtest(tr, opts, hindsight=hindsight, baselines=baselines)
        report["tier"] = tier
        if plots:
            plot.write_plot(Path(plots) / f"{Path(path).stem}-{tier}.png", report)
        report.pop("_series", None)
        reports.append(report)
    for report in reports:
        report["seconds"] = round(time.monotonic() - started, 1)
    return reports


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--traces", default=os.environ.get("SPEECHOPS_TRACES", str(REPO.parent / "shared" / "traces")))
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--plots", help="write one PNG per trace and tier into this folder")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--durations", choices=("fixed", "exponential"), default="fixed",
                    help="stream lengths: all 240 s, or exponential with that mean")
    ap.add_argument("--no-opening-hours", action="store_true", help="leave out the synthetic opening-hours trace")
    ap.add_argument("--opening-hours-weeks", type=int, default=4, help="length of the synthetic trace (default 4)")
    ap.add_argument("--only", type=lambda v: [n for n in v.split(",") if n], default=[],
                    help="only the shared traces whose file name contains one of these, comma-separated")
    return ap


def report_name(args: argparse.Namespace) -> str:
    return "-".join(["backtest", *args.only, *(["exponential"] if args.durations == "exponential" else [])])


def main(args: argparse.Namespace | None = None) -> int:
    args = args or parser().parse_args()
    traces = [p for p in sorted(Path(args.traces).glob("*.csv"))
              if not args.only or any(name in p.name for name in args.only)]
    if not traces:
        print(f"no traces in {args.traces} (set --traces or SPEECHOPS_TRACES)", file=sys.stderr)
        return 2
    if args.plots:
        plot.require_matplotlib()
        Path(args.plots).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_opening_hours:
            traces.append(opening_hours_trace(Path(tmp) / "synthetic_opening_hours_per_minute.csv",
                                              weeks=args.opening_hours_weeks))
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            reports = [r for rs in pool.map(run_one, map(str, traces), [args.plots] * len(traces),
                                            [args.durations] * len(traces)) for r in rs]
    if args.json:
        print(json.dumps(reports))
        return 0
    for report in reports:
        print(f"[{report['tier']}] " + scores.format_table(report) + f"  [{report['seconds']}s]\n")
    print(f"{'trace':<38} {'tier':<12} {'achieved':>10} {'vs hindsight':>12} {'sigmas':>13} {'pod-h/oracle':>12} "
          f"{'pod-h/HPA':>9} {'HPA achieved':>12} {'HPA cut':>8} {'cut':>4}  targets")
    for r in reports:
        q, res = r["ratios"], r["results"]
        band = res.get("hindsight-band")
        sig = f"{res['speechops']['headroom_sigmas']:.2f}/{'-' if band is None else format(band['headroom_sigmas'], '.2f')}"
        vs = "-" if q["pod_hours_vs_hindsight"] is None else f"{q['pod_hours_vs_hindsight']:.3f}"
        hpa = res["hpa"]["availability"]
        print(f"{r['trace']:<38} {r['tier']:<12} {100 * q['availability']:>9.4f}% {vs:>12} {sig:>13} "
              f"{q['pod_hours_vs_oracle']:>12.3f} {q['pod_hours_vs_hpa']:>9.3f} {100 * hpa:>11.4f}% "
              f"{res['hpa']['streams_cut']:>8.0f} "
              f"{res['speechops']['streams_cut']:>4.0f}  "
              f"{'all met' if r['all_targets_met'] else 'missed: ' + ', '.join(k for k, ok in r['targets_met'].items() if not ok)}")
    print("sigmas: where the error budget left speechops' band / the hindsight band's fixed width")
    return 0


if __name__ == "__main__":
    from report import run_and_report
    arguments = parser().parse_args()
    sys.exit(run_and_report(report_name(arguments), main, arguments))
