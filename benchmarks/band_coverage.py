"""How well the forecast band covers what comes, per shared trace: the share of ticks whose
demand one lead time later is at or below the band's top, against the quantile the tier's
sigmas stand for.

    python benchmarks/band_coverage.py [--traces DIR] [--sigmas 2.0 2.5]

Each trace is turned into concurrent streams as the backtest does (default options) and fed
to the forecaster tick by tick; only the scored part (past the 30% warm-up) counts. The
baseline in the same run is the forecaster's `rms` band (sigmas x the RMS of recent
under-forecasts). Also printed: the band's mean height in units of sqrt(demand), and the
mean shortfall, in streams, of the ticks it did not cover. About 50 s on 2 cores.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "contract"), str(REPO / "operator")]

from speechops.scaling.backtest import options, run, trace  # noqa: E402
from speechops.scaling.backtest import report as scores  # noqa: E402  (benchmarks/report.py is `report`)
from speechops.scaling.forecast import SeasonalForecaster, band_quantile  # noqa: E402


def coverage(path: str, sigmas: float, band: str) -> dict:
    started = time.monotonic()
    opts = options.Options()
    times, _, demand, score_from = trace.prepare(trace.load_trace(path), opts)
    lead = run.policy_config(opts, 1).lead_time
    ahead = int(round(lead / opts.tick))
    forecaster = SeasonalForecaster(lead=lead, band_sigmas=sigmas, band=band)
    upper = np.empty(len(demand))
    height = np.empty(len(demand))
    for i, (t, d) in enumerate(zip(times, demand)):
        forecaster.observe(float(t), float(d))
        forecast = forecaster.predict(float(t))
        upper[i], height[i] = forecast.upper, forecast.band / math.sqrt(max(forecast.expected, 1.0))
    came, top = scores.band_outcomes(demand, upper, score_from, ahead)
    short = np.maximum(came - top, 0.0)
    return {"trace": Path(path).stem, "sigmas": sigmas, "band": band, "nominal": band_quantile(sigmas),
            "covered": scores.band_coverage(demand, upper, score_from, ahead),
            "height": float(np.mean(height[score_from:])),
            "shortfall": float(short[short > 0].mean()) if (short > 0).any() else 0.0,
            "seconds": round(time.monotonic() - started, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--traces", default=os.environ.get("SPEECHOPS_TRACES", str(REPO.parent / "shared" / "traces")))
    ap.add_argument("--sigmas", type=float, nargs="+", default=[2.0], help="band widths (interactive 2, realtime 2.5)")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    traces = sorted(map(str, Path(args.traces).glob("*.csv")))
    if not traces:
        print(f"no traces in {args.traces} (set --traces or SPEECHOPS_TRACES)", file=sys.stderr)
        return 2
    runs = [(path, sigmas, band) for path in traces for sigmas in args.sigmas for band in ("filtered", "rms")]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        rows = list(pool.map(coverage, *zip(*runs)))
    print(f"{'trace':<40} {'sigmas':>6} {'nominal':>8} {'band':>9} {'covered':>8} "
          f"{'height/sqrt(d)':>15} {'shortfall':>10}")
    for row in rows:
        print(f"{row['trace']:<40} {row['sigmas']:>6.2f} {row['nominal']:>8.2%} {row['band']:>9} "
              f"{row['covered']:>8.2%} {row['height']:>15.2f} {row['shortfall']:>10.1f}")
    for sigmas in args.sigmas:
        for band in ("filtered", "rms"):
            misses = [abs(r["covered"] - r["nominal"]) for r in rows if r["sigmas"] == sigmas and r["band"] == band]
            print(f"{band} at {sigmas:g} sigma: mean distance from nominal {np.mean(misses):.2%} over {len(misses)} traces")
    return 0


if __name__ == "__main__":
    from report import run_and_report
    sys.exit(run_and_report("band_coverage", main))
