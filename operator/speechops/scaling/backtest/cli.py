"""`speechops backtest`: the backtest's command line.

Reads a trace CSV, or a running pipeline's own arrivals from Prometheus (`trace.fetch`),
takes the policy settings from flags, a SpeechPipeline manifest (`--spec`) or the
operator's defaults, in that order, runs `run.backtest` and prints its table, JSON or plot.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import yaml

from speechops_contract.api import Scaling, SpecError, parse_duration, parse_spec
from speechops_contract.profiles import PROFILES, profile
import speechops.scaling.backtest as package
from speechops.scaling.backtest import trace as replay
from speechops.scaling.backtest.options import DEFAULT_PROFILE, TICK, Options
from speechops.scaling.backtest.plot import PlotUnavailable, require_matplotlib, write_plot
from speechops.scaling.backtest.report import format_table, observed_fit
from speechops.scaling.backtest.run import backtest
from speechops.scaling.backtest.trace import Trace, TraceError, load_trace
from speechops.scaling.signals import STEP, PrometheusSource, SignalError


def _from_prometheus(args: argparse.Namespace, duration: float | None,
                     history_seconds: float) -> tuple[Trace, float, dict]:
    """The pipeline's arrivals from Prometheus as a trace, the stream duration to replay them
    with (Little's law unless given), and what the report says of where they came from."""
    namespace, _, pipeline = args.pipeline.partition("/")
    if not namespace or not pipeline or "/" in pipeline:
        raise ValueError(f"--pipeline must be NAMESPACE/NAME, got {args.pipeline!r}")
    end = math.floor(time.time() / STEP) * STEP
    start = end - history_seconds
    history = replay.fetch(PrometheusSource(args.prometheus, timeout=30.0), namespace, pipeline, start, end)
    trace = Trace(name=history.name, times=history.times, values=history.arrivals, step=history.step)
    if args.save_trace:
        replay.save_trace(history, args.save_trace)
    derived = history.littles_law_duration()
    source = {"prometheus": args.prometheus, "pipeline": history.name, "history_seconds": end - start,
              "arrivals_per_second": round(history.arrival_rate, 4),
              "littles_law_duration_seconds": round(derived, 1),
              "duration_from": "--duration" if duration is not None else "littles_law",
              "streams": (history.streams_times, history.streams)}
    return trace, (duration if duration is not None else max(derived, TICK)), source


def spec_settings(path: str | Path) -> tuple[dict, str]:
    """What a SpeechPipeline manifest sets for the backtest (the tier's band, capacity,
    utilisation, lead time, scale-down, the history the scaler reads), and its
    namespace/name. Raises ValueError naming the file or the field."""
    try:
        docs = list(yaml.safe_load_all(Path(path).read_text()))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"--spec {path}: {exc}") from None
    found = [d for d in docs if isinstance(d, dict) and d.get("kind") == "SpeechPipeline"]
    if not found:
        raise ValueError(f"--spec {path}: no SpeechPipeline in it")
    try:
        spec = parse_spec(found[0].get("spec"))
    except SpecError as exc:
        raise ValueError(f"--spec {path}: {exc}") from None
    meta = found[0].get("metadata") or {}
    settings = {"capacity": spec.capacity.streams_per_replica, "util": spec.capacity.target_utilization,
                "lead": spec.scaling.lead_time, "scale_down_delay": spec.scaling.scale_down_delay,
                "scale_down_max_percent": spec.scaling.scale_down_max_percent,
                "scale_down_period": spec.scaling.scale_down_period, "profile": spec.profile,
                "availability": spec.scaling.availability,
                "history": spec.scaling.history}
    return settings, f"{meta.get('namespace') or 'default'}/{meta.get('name') or ''}"


# Policy settings a flag or a --spec can give: flag > spec > these.
_POLICY_DEFAULTS = {**{key: getattr(Options(), key) for key in ("capacity", "util", "lead", "scale_down_delay",
                                                                 "scale_down_max_percent", "scale_down_period")},
                    "profile": DEFAULT_PROFILE, "history": Scaling.history, "availability": None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="speechops backtest", description=package.__doc__.split("\n\n")[0])
    ap.add_argument("trace", nargs="?", help="CSV of timestamp,value arrivals (any fixed step; gaps allowed)")
    ap.add_argument("--prometheus", metavar="URL",
                    help="replay a running pipeline's own arrivals from this Prometheus instead of a CSV")
    ap.add_argument("--pipeline", metavar="NAMESPACE/NAME",
                    help="the pipeline to replay (with --prometheus; default: the --spec's)")
    ap.add_argument("--history", help="how far back to read, with --prometheus (default 14d, or the --spec's)")
    ap.add_argument("--save-trace", metavar="CSV", help="with --prometheus: also write the arrivals as a trace CSV")
    ap.add_argument("--spec", metavar="YAML", help="a SpeechPipeline manifest: its profile, capacity, leadTime "
                                                   "and scale-down settings are the defaults of the flags below")
    ap.add_argument("--duration", help="mean stream duration (default 240s; with --prometheus, Little's law: "
                                       "mean open streams / arrival rate)")
    ap.add_argument("--capacity", type=int, help="streams one pod serves (default 16)")
    ap.add_argument("--util", type=float, help="target utilisation (default 0.8)")
    ap.add_argument("--profile", choices=sorted(PROFILES),
                    help="latency tier: where the band starts and the default objective "
                         f"(default {DEFAULT_PROFILE}: {PROFILES[DEFAULT_PROFILE].headroom_sigmas:g} sigma, "
                         f"{100 * PROFILES[DEFAULT_PROFILE].availability:g}%%)")
    ap.add_argument("--availability", type=float, metavar="PERCENT",
                    help="availability objective, percent of demanded stream-minutes served (default: the "
                         "--spec's, else the tier's)")
    ap.add_argument("--start-delay", default="120s", help="pod creation to ready (default 120s)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply arrivals (default 1.0)")
    ap.add_argument("--gap", choices=("zero", "hold"), default="zero", help="missing rows: zero or repeat last")
    ap.add_argument("--durations", choices=("fixed", "exponential"), default="fixed",
                    help="every stream lasts --duration, or exponentially distributed with that mean "
                         "(closer to call lengths; drained pods empty later)")
    ap.add_argument("--lead", help=f"forecast lead time (default {Scaling.lead_time:g}s)")
    ap.add_argument("--scale-down-delay",
                    help=f"how long demand stays low before pods drain (default {Scaling.scale_down_delay:g}s)")
    ap.add_argument("--scale-down-max-percent", type=int,
                    help="most of the period's highest pod count removed within the period, 1-100 "
                         f"(default {Scaling.scale_down_max_percent})")
    ap.add_argument("--scale-down-period",
                    help=f"the window --scale-down-max-percent counts over (default {Scaling.scale_down_period:g}s)")
    ap.add_argument("--warmup", type=float, default=0.3, help="share of the trace not scored (default 0.3)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    ap.add_argument("--plot", metavar="PNG", help="write a PNG of demand, capacity, forecast and band")
    ap.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                    help="progress bar on stderr (default: when stderr is a terminal)")
    args = ap.parse_args(argv)
    try:
        settings, spec_pipeline = spec_settings(args.spec) if args.spec else ({}, None)
        args.pipeline = args.pipeline or (spec_pipeline if args.prometheus else None)
        if (args.trace is None) == (args.prometheus is None):
            raise ValueError("give either a trace CSV or --prometheus URL --pipeline NAMESPACE/NAME")
        if args.prometheus and not args.pipeline:
            raise ValueError("--prometheus needs --pipeline NAMESPACE/NAME (or a --spec to take it from)")
        if args.trace and (args.pipeline or args.save_trace):
            raise ValueError("--pipeline and --save-trace go with --prometheus")
        for key, flag in (("capacity", args.capacity), ("util", args.util), ("profile", args.profile),
                          ("availability", args.availability),
                          ("scale_down_max_percent", args.scale_down_max_percent)):
            settings[key] = flag if flag is not None else settings.get(key, _POLICY_DEFAULTS[key])
        for key, flag in (("lead", args.lead), ("scale_down_delay", args.scale_down_delay),
                          ("scale_down_period", args.scale_down_period), ("history", args.history)):
            settings[key] = parse_duration(flag) if flag is not None else settings.get(key, _POLICY_DEFAULTS[key])
        duration = None if args.duration is None else parse_duration(args.duration)
        problems = [m for ok, m in ((settings["capacity"] >= 1, "--capacity must be >= 1"),
                                    (0 < settings["util"] <= 1, "--util must be in (0, 1]"),
                                    (args.scale > 0, "--scale must be > 0"),
                                    (duration is None or duration >= TICK, f"--duration must be at least {TICK:g}s"),
                                    (0 <= args.warmup < 1, "--warmup must be in [0, 1)"),
                                    (1 <= settings["scale_down_max_percent"] <= 100,
                                     "--scale-down-max-percent must be in 1..100"),
                                    (settings["availability"] is None or 50 < settings["availability"] < 100,
                                     "--availability must be a percent in (50, 100)")) if not ok]
        if problems:
            raise ValueError("; ".join(problems))
        if args.plot:
            require_matplotlib()
        source: dict = {}
        history = settings.pop("history")
        if args.prometheus:
            trace, duration, source = _from_prometheus(args, duration, history)
        else:
            trace, duration = load_trace(args.trace), (Options.duration if duration is None else duration)
        tier = profile(settings.pop("profile"))
        headroom = tier.headroom_sigmas
        objective = tier.availability if settings.get("availability") is None else settings["availability"] / 100.0
        settings["availability"] = objective
        opts = Options(duration=duration, start_delay=parse_duration(args.start_delay), scale=args.scale,
                       gap=args.gap, durations=args.durations, warmup=args.warmup, headroom_sigmas=headroom,
                       **settings)
    except (ValueError, TraceError, PlotUnavailable, SignalError) as exc:
        print(f"speechops backtest: {exc}", file=sys.stderr)
        return 2
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    started = time.monotonic()
    report = backtest(trace, opts, progress=progress)
    if source:
        fit = observed_fit(trace, opts, *source.pop("streams"))
        report["source"] = {**source, "replay_gap": None if fit is None else round(fit, 4)}
    report["seconds"] = round(time.monotonic() - started, 1)
    if args.plot:
        write_plot(args.plot, report)
    report.pop("_series", None)
    if args.json:
        print(json.dumps(report))
    else:
        print(format_table(report))
        if args.plot:
            print(f"  plot: {args.plot}")
    return 0
