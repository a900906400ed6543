"""Backtest input from a running pipeline: its own arrivals, read back from Prometheus.

`speechops backtest --prometheus URL --pipeline NAMESPACE/NAME` replays the pipeline's
last `--history` instead of a CSV, so a platform team can see what the scaler would have
done with its own traffic before it hands the fleet over (or while it runs a dry run).

- Arrivals: the gateways' `speechops_streams_started_total`, differenced per series (a pod
  restart resets its counter; a sum over pods would hide that) and summed per minute. A
  pod that appears mid-range counts its first value, which it counted from zero.
- Stream duration: Little's law over the same range, mean open streams
  (`speechops_active_streams`) / mean arrival rate, unless `--duration` says otherwise.

The open streams also come back, so the backtest can say how well its replay (every stream
lasting one fixed duration) matches what the gateways counted.
"""

from __future__ import annotations

import csv
import datetime
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speechops_contract import names
from speechops.scaling.forecast import from_counter
from speechops.scaling.signals import DEFAULT_QUERIES, STEP, PrometheusSource, render_query, sum_series

ARRIVALS_QUERY = f'{names.M_STREAMS_STARTED}{{namespace="$namespace",pipeline="$pipeline"}}'
STREAMS_QUERY = DEFAULT_QUERIES["streams"]


class ReplayError(ValueError):
    pass


@dataclass(frozen=True)
class PipelineHistory:
    name: str                      # namespace/pipeline
    times: np.ndarray              # start of each minute with arrivals data
    arrivals: np.ndarray           # streams admitted in that minute
    streams_times: np.ndarray      # open streams, as the gateways counted them
    streams: np.ndarray
    step: float = STEP

    @property
    def arrival_rate(self) -> float:
        """Streams admitted per second, over the minutes with data."""
        return float(self.arrivals.sum() / (len(self.arrivals) * self.step)) if len(self.arrivals) else 0.0

    def littles_law_duration(self) -> float:
        """Mean stream duration (s): open streams / arrival rate, over the minutes both cover."""
        # Streams gauge at the end of each arrivals minute.
        ends = self.times + self.step
        have = np.isin(ends, self.streams_times)
        rate = float(self.arrivals[have].sum() / (have.sum() * self.step)) if have.any() else 0.0
        if rate <= 0:
            raise ReplayError(f"{self.name}: no streams were admitted in the range, so there is no duration "
                              "to derive: give --duration")
        open_streams = float(np.mean(np.interp(ends[have], self.streams_times, self.streams)))
        return open_streams / rate


def arrivals_from_counters(series: list[tuple[np.ndarray, np.ndarray]], start: float,
                           step: float = STEP) -> tuple[np.ndarray, np.ndarray]:
    """Per-series counter samples -> (minute starts, arrivals in that minute), summed over
    series. Resets count from zero (forecast.from_counter); a series whose first sample
    comes after `start` + one step began mid-range and counts its first value too."""
    increases = []
    for times, values in series:
        if not len(times):
            continue
        increase = from_counter(values)
        if times[0] > start + step:
            increase[0] = values[0]
        known = np.isfinite(increase)
        increases.append((times[known] - step, increase[known]))
    return sum_series(increases)


def fetch(source: PrometheusSource, namespace: str, pipeline: str, start: float, end: float,
          arrivals_query: str = ARRIVALS_QUERY, streams_query: str = STREAMS_QUERY) -> PipelineHistory:
    """The pipeline's arrivals and open streams over [start, end] at one-minute steps.
    Raises SignalError when Prometheus fails, ReplayError when it has no arrivals."""
    a_query = render_query(arrivals_query, namespace, pipeline)
    series = source.history_by_series(a_query, start, end)
    times, arrivals = arrivals_from_counters(series, start)
    name = f"{namespace}/{pipeline}"
    if len(times) < 2:
        raise ReplayError(f"{name}: Prometheus at {source.url} has no arrivals for `{a_query}` between "
                          f"{_iso(start)} and {_iso(end)}. The gateways export {names.M_STREAMS_STARTED}; "
                          "check the namespace/pipeline, that Prometheus scrapes the worker pods, and --history")
    s_query = render_query(streams_query, namespace, pipeline)
    s_times, s_values = source.history(s_query, start, end)
    if not len(s_times):
        raise ReplayError(f"{name}: no open-stream history for `{s_query}`")
    return PipelineHistory(name=name, times=times, arrivals=arrivals, streams_times=s_times, streams=s_values)


def save_trace(history: PipelineHistory, path: str | Path) -> None:
    """The arrivals as a `timestamp,value` CSV that `speechops backtest TRACE.csv` reads."""
    with Path(path).open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["timestamp", "arrivals"])
        for t, v in zip(history.times.tolist(), history.arrivals.tolist()):
            out.writerow([_iso(t), f"{v:g}"])


def _iso(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat().replace("+00:00", "Z")
