"""Backtest every shared trace with the default options and print the per-trace table
against the targets (speechops vs the HPA, Holt-Winters and the oracle, same process).

    python benchmarks/backtest.py [--traces DIR] [--json] [--plots DIR]
                                                      [--durations fixed|exponential]

Targets, per trace: unserved stream-minutes <= 0.1x HPA's, pod-hours <= 1.1x HPA's and
<= 1.15x the oracle's, 0 streams cut. `perfect/oracle` is the speechops policy fed the true
future demand: the pod-hours the policy costs before any forecast error. The exit code is 0
either way: this prints figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "contract"), str(REPO / "operator")]

from speechops.scaling.backtest import options, plot, run, trace  # noqa: E402
from speechops.scaling.backtest import report as scores  # noqa: E402  (benchmarks/report.py is `report`)



def run_one(path: str, plots: str | None, durations: str) -> dict:
    started = time.monotonic()
    report = run.backtest(trace.load_trace(path), options.Options(durations=durations))
    if plots:
        plot.write_plot(Path(plots) / f"{Path(path).stem}.png", report)
    report.pop("_series", None)
    report["seconds"] = round(time.monotonic() - started, 1)
    return report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--traces", default=os.environ.get("SPEECHOPS_TRACES", str(REPO.parent / "shared" / "traces")))
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--plots", help="write one PNG per trace into this folder")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--durations", choices=("fixed", "exponential"), default="fixed",
                    help="stream lengths: all 240 s, or exponential with that mean")
    args = ap.parse_args()
    traces = sorted(Path(args.traces).glob("*.csv"))
    if not traces:
        print(f"no traces in {args.traces} (set --traces or SPEECHOPS_TRACES)", file=sys.stderr)
        return 2
    if args.plots:
        plot.require_matplotlib()
        Path(args.plots).mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        reports = list(pool.map(run_one, map(str, traces), [args.plots] * len(traces),
                                [args.durations] * len(traces)))
    if args.json:
        print(json.dumps(reports))
        return 0
    for report in reports:
        print(scores.format_table(report) + f"  [{report['seconds']}s]\n")
    print(f"{'trace':<40} {'unserved/HPA':>12} {'pod-h/HPA':>10} {'pod-h/oracle':>12} {'perfect/oracle':>14} "
          f"{'HW pod-h/HPA':>12} {'cut':>5}  targets")
    for r in reports:
        q = r["ratios"]
        hw = r["results"]["holt-winters"]["pod_hours"] / max(r["results"]["hpa"]["pod_hours"], 1e-9)
        uns = "inf" if q["unserved_vs_hpa"] is None else f"{q['unserved_vs_hpa']:.3f}"
        print(f"{r['trace']:<40} {uns:>12} {q['pod_hours_vs_hpa']:>10.3f} {q['pod_hours_vs_oracle']:>12.3f} "
              f"{q['perfect_forecast_pod_hours_vs_oracle']:>14.3f} {hw:>12.3f} {r['results']['speechops']['streams_cut']:>5.0f}  "
              f"{'all met' if r['all_targets_met'] else 'missed: ' + ', '.join(k for k, ok in r['targets_met'].items() if not ok)}")
    return 0


if __name__ == "__main__":
    from report import run_and_report
    sys.exit(run_and_report("backtest", main))
