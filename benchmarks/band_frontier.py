"""Which band width holds the targets on which shared trace: the speechops policy run at
several headroom widths (a tier's sigmas) against the same HPA and oracle, per trace.

    python benchmarks/band_frontier.py [--traces DIR] [--sigmas 0 1.64 2 2.5]

Each cell is unserved / HPA, pod-hours / HPA, pod-hours / oracle, marked `ok` where all
three targets hold (<= 0.1, <= 1.1, <= 1.15; no stream is ever cut), and `cov` is the
share of the scored demand one lead time ahead that the band's top covered. 0 sigmas is
the `batch` tier (no band), 2 `interactive`, 2.5 `realtime`. The issue asks for one tuning
that holds on every trace; this prints whether a band width does. About 3 minutes on 2
cores. The exit code is 0 either way: this prints figures.
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

from speechops.scaling.backtest import baselines, options, run, trace  # noqa: E402
from speechops.scaling.backtest import report as scores  # noqa: E402  (benchmarks/report.py is `report`)


def frontier(path: str, widths: list[float]) -> tuple[str, list[str], list[bool]]:
    opts = options.Options()
    times, arrivals, demand, score_from = trace.prepare(trace.load_trace(path), opts)
    hpa = baselines.run_hpa(times, arrivals, demand, opts, score_from)
    oracle = baselines.run_oracle(demand, opts, score_from)
    ahead = int(round(run.policy_config(opts, 1).lead_time / opts.tick))
    cells, held = [], []
    for sigmas in widths:
        run_opts = dataclasses.replace(opts, headroom_sigmas=sigmas)
        ours = run.run_forecast_policy("speechops", "speechops", times, arrivals, demand, run_opts, score_from)
        ratios, checks = scores.against_targets(ours, hpa, oracle)
        ok = all(checks.values())
        cover = scores.band_coverage(demand, ours.upper, score_from, ahead)
        cells.append(f"{ratios['unserved_vs_hpa']:.3f}/{ratios['pod_hours_vs_hpa']:.3f}/"
                     f"{ratios['pod_hours_vs_oracle']:.3f} {'ok' if ok else '--'} cov {100 * (cover or 0):4.1f}%")
        held.append(ok)
    return Path(path).stem, cells, held


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--traces", default=os.environ.get("SPEECHOPS_TRACES", str(REPO.parent / "shared" / "traces")))
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.0, 1.64, 2.0, 2.5])
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
    for name, cells, _ in rows:
        print(f"{name:<36} " + " ".join(f"{c:<{width}}" for c in cells))
    print(f"{'traces held':<36} " + " ".join(
        f"{f'{sum(r[2][k] for r in rows)} of {len(rows)}':<{width}}" for k in range(len(args.sigmas))))
    return 0


if __name__ == "__main__":
    from report import run_and_report
    sys.exit(run_and_report("band_frontier", main))
