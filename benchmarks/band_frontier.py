"""The frontier the hindsight band is picked from: on each shared trace, the speechops
policy at fixed band widths (sigmas of the forecaster's own errors), each with the
availability it achieved (share of demanded stream-minutes served), its pod-hours against
the oracle's, and the band's coverage of the demand one lead time ahead.

    python benchmarks/band_frontier.py [--traces DIR] [--sigmas 0 1 2 3 4]

Each cell is availability / pod-hours x oracle, with the objectives it meets (B: batch
99%, I: interactive 99.9%, R: realtime 99.99%). About 3 minutes on 2 cores. The exit code
is 0 either way: this prints figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "contract"), str(REPO / "operator")]

from speechops_contract.profiles import PROFILES  # noqa: E402
from speechops.scaling.backtest import baselines, options, run, trace  # noqa: E402
from speechops.scaling.backtest import report as scores  # noqa: E402  (benchmarks/report.py is `report`)


def frontier(path: str, widths: list[float]) -> tuple[str, list[str]]:
    opts = options.Options()
    times, arrivals, demand, score_from = trace.prepare(trace.load_trace(path), opts)
    oracle = baselines.run_oracle(demand, opts, score_from)
    ahead = int(round(run.policy_config(opts, 1).lead_time / opts.tick))
    cells = []
    for sigmas in widths:
        run_opts = dataclasses.replace(opts, headroom_sigmas=sigmas)
        ours = run.run_forecast_policy("speechops", "speechops", times, arrivals, demand, run_opts, score_from)
        met = "".join(t[0].upper() for t, p in PROFILES.items() if ours.availability >= p.availability)
        cover = scores.band_coverage(demand, ours.upper, score_from, ahead)
        cells.append(f"{100 * ours.availability:.4f}%/{scores.ratio(ours.pod_hours, oracle.pod_hours):.3f} "
                     f"{met or '-':<3} cov {100 * (cover or 0):4.1f}%")
    return Path(path).stem, cells


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--traces", default=os.environ.get("SPEECHOPS_TRACES", str(REPO.parent / "shared" / "traces")))
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.0, 1.0, 2.0, 3.0, 4.0])
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    traces = sorted(Path(args.traces).glob("*.csv"))
    if not traces:
        print(f"no traces in {args.traces} (set --traces or SPEECHOPS_TRACES)", file=sys.stderr)
        return 2
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        rows = list(pool.map(frontier, map(str, traces), [args.sigmas] * len(traces)))
    width = 36
    print(f"{'trace':<36} " + " ".join(f"{f'{s:g} sigma':<{width}}" for s in args.sigmas))
    for name, cells in rows:
        print(f"{name:<36} " + " ".join(f"{c:<{width}}" for c in cells))
    return 0


if __name__ == "__main__":
    from report import run_and_report
    sys.exit(run_and_report("band_frontier", main))
