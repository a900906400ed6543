"""Backtest input: a trace CSV of arrivals, or a running pipeline's own arrivals read back
from Prometheus, turned into arrivals and concurrent streams on the tick grid.

From Prometheus (`speechops backtest --prometheus URL --pipeline NAMESPACE/NAME`), so a
platform team can see what the scaler would have done with its own traffic before it
hands the fleet over (or while it runs a dry run):

- Arrivals: the gateways' `speechops_streams_started_total`, differenced per series (a pod
  restart resets its counter; a sum over pods would hide that) and summed per minute. A
  pod that appears mid-range counts its first value, which it counted from zero.
- Stream duration: Little's law over the same range, mean open streams
  (`speechops_active_streams`) / mean arrival rate, unless `--duration` says otherwise.

The open streams also come back, so the backtest can say how well its replay matches what
the gateways counted.
"""

from __future__ import annotations

import csv
import datetime
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speechops_contract import names
from speechops.scaling.backtest.options import Options
from speechops.scaling.forecast import from_counter
from speechops.scaling.signals import DEFAULT_QUERIES, STEP, PrometheusSource, render_query, sum_series


class TraceError(ValueError):
    pass


@dataclass(frozen=True)
class Trace:
    name: str
    times: np.ndarray    # unix seconds, sorted
    values: np.ndarray   # arrivals per step
    step: float          # seconds




def _parse_time(text: str) -> float:
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    stamp = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=datetime.timezone.utc)
    return stamp.timestamp()


def load_trace(path: str | Path) -> Trace:
    """CSV `timestamp,value` (ISO 8601 or unix seconds; a header row is allowed), any fixed
    step, rows may be missing (gaps). Raises TraceError naming the line on bad input."""
    path = Path(path)
    if not path.is_file():
        raise TraceError(f"{path}: no such file")
    times, values = [], []
    with path.open(newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh), start=1):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 2:
                raise TraceError(f"{path}:{lineno}: expected 'timestamp,value', got {','.join(row)!r}")
            try:
                t, v = _parse_time(row[0]), float(row[1])
            except ValueError:
                if lineno == 1:
                    continue   # header
                raise TraceError(f"{path}:{lineno}: cannot read {row[0]!r},{row[1]!r} as timestamp,value") from None
            if not math.isfinite(v) or v < 0:
                raise TraceError(f"{path}:{lineno}: value must be a finite count >= 0, got {row[1]!r}")
            times.append(t)
            values.append(v)
    if len(times) < 2:
        raise TraceError(f"{path}: needs at least two rows of timestamp,value")
    t = np.asarray(times)
    v = np.asarray(values)
    order = np.argsort(t, kind="stable")
    t, v = t[order], v[order]
    diffs = np.diff(t)
    if (diffs == 0).any():
        raise TraceError(f"{path}: duplicate timestamp {datetime.datetime.fromtimestamp(t[1:][diffs == 0][0], datetime.timezone.utc).isoformat()}")
    step = float(np.min(diffs))
    return Trace(name=path.stem, times=t, values=v, step=step)


def arrivals_per_tick(trace: Trace, opts: Options) -> tuple[np.ndarray, np.ndarray]:
    """Arrivals on the tick grid. A row covers [t, t + step) and is spread evenly over the
    ticks it overlaps; missing rows are zero (`--gap zero`) or repeat the last row (`hold`)."""
    tick, step = opts.tick, trace.step
    start = math.floor(trace.times[0] / tick) * tick
    end = trace.times[-1] + step
    n = int(math.ceil((end - start) / tick))
    grid = np.zeros(n)
    index = np.rint((trace.times - trace.times[0]) / step).astype(np.int64)
    full = np.full(int(index[-1]) + 1, np.nan)
    full[index] = trace.values
    if opts.gap == "hold":
        mask = np.isnan(full)
        last = np.where(~mask, np.arange(len(full)), 0)
        np.maximum.accumulate(last, out=last)
        full = full[last]
    full = np.nan_to_num(full, nan=0.0) * opts.scale
    row_start = trace.times[0] + np.arange(len(full)) * step
    # Spread each row over the ticks it overlaps, in proportion to the overlap.
    if step <= tick:
        np.add.at(grid, ((row_start - start) // tick).astype(np.int64), full)
    else:
        per_second = full / step
        pieces = int(math.ceil(step / tick)) + 1
        for k in range(pieces):
            lo = row_start + k * tick
            cell = np.floor((lo - start) / tick)
            cell_lo = start + cell * tick
            seg_lo = np.maximum(row_start, cell_lo)
            seg_hi = np.minimum(row_start + step, cell_lo + tick)
            width = np.clip(seg_hi - seg_lo, 0, None)
            valid = (width > 0) & (cell < n)
            np.add.at(grid, cell[valid].astype(np.int64), per_second[valid] * width[valid])
    return start + np.arange(n) * tick, grid


def concurrency(arrivals: np.ndarray, duration_ticks: int) -> np.ndarray:
    """Streams alive at each tick when every stream lasts `duration_ticks` ticks."""
    c = np.concatenate(([0.0], np.cumsum(arrivals)))
    idx = np.arange(1, len(arrivals) + 1)
    return c[idx] - c[np.maximum(idx - duration_ticks, 0)]


class Lifetimes:
    """How long streams last, and so how many of those that arrived by one tick are still
    open at a later one. `fixed`: every stream lasts `opts.duration`. `exponential`: the
    same mean, exponentially distributed, closer to call lengths (most calls short, a few
    long), so a drained pod empties over several mean durations rather than exactly one;
    the first tick's arrival rate is taken to have run before it (a steady start)."""

    def __init__(self, arrivals: np.ndarray, opts: Options):
        self.kind = opts.durations
        self.d_ticks = max(int(round(opts.duration / opts.tick)), 1)
        if self.kind == "fixed":
            self.cum = np.concatenate(([0.0], np.cumsum(arrivals)))
            # The last tick at or before i with any arrival: a drained pod empties D after it.
            has = np.where(arrivals > 0, np.arange(len(arrivals)), -10**9)
            self.last_arrival = np.maximum.accumulate(has)
        elif self.kind == "exponential":
            self.survive = math.exp(-opts.tick / opts.duration)     # per tick
            # open[i]: streams that arrived by tick i still open at its end, from a steady
            # start. A tick's arrivals are half a tick old then, so each counts sqrt(survive),
            # and a stream counts `duration` on average, as Little's law has it.
            self.open = np.empty(len(arrivals))
            arrived = (arrivals[0] if len(arrivals) else 0.0) / (1.0 - self.survive)
            for i, a in enumerate(arrivals.tolist()):
                arrived = arrived * self.survive + a
                self.open[i] = arrived
            self.open *= math.sqrt(self.survive)
        else:
            raise ValueError(f"durations must be fixed or exponential, not {self.kind!r}")

    def alive_since(self, i0: int, t: int) -> float:
        """Streams that arrived up to tick i0 and are still open at tick t >= i0."""
        if self.kind == "fixed":
            lo = max(t - self.d_ticks + 1, 0)
            return self.cum[i0 + 1] - self.cum[lo] if lo <= i0 else 0.0
        return float(self.open[i0]) * self.survive ** (t - i0)

    def empty_at(self, t: int, per_pod: float) -> int:
        """The tick a pod that took its last stream at tick t, holding `per_pod` streams
        then, is empty. Exponential: when it expects under half a stream, near the expected
        longest of its streams (16 of mean 240 s: 14 minutes; the longest, 13.5 on average)."""
        if self.kind == "fixed":
            return int(self.last_arrival[t]) + self.d_ticks if per_pod > 0 else t + 1
        if per_pod <= 0.5:
            return t + 1
        return t + max(int(math.ceil(math.log(per_pod / 0.5) / -math.log(self.survive))), 1)


def prepare(trace: Trace, opts: Options) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Tick times, arrivals, concurrent demand, and the first scored tick."""
    times, arrivals = arrivals_per_tick(trace, opts)
    d_ticks = max(int(round(opts.duration / opts.tick)), 1)
    # The trace starts mid-operation: streams that began before its first row are still
    # open. Without them concurrency would ramp up from zero, an artefact no forecaster
    # should see; assume the first duration's arrival rate ran before it. One duration of
    # that rate is prepended as ticks (the policies start there, unscored), and the demand
    # there already counts the streams of the duration before it, so every policy starts
    # from a steady fleet: fed a ramp from zero, a forecaster learnt one hour of huge
    # lead-time errors from it (the whole of the 1-hour azure traces).
    head = np.full(d_ticks, arrivals[:d_ticks].mean())
    times = np.concatenate((times[0] - opts.tick * np.arange(d_ticks, 0, -1), times))
    if opts.durations == "fixed":
        demand = concurrency(np.concatenate((head, head, arrivals)), d_ticks)[d_ticks:]
    else:
        demand = Lifetimes(np.concatenate((head, arrivals)), opts).open
    arrivals = np.concatenate((head, arrivals))
    return times, arrivals, demand, d_ticks + int((len(demand) - d_ticks) * opts.warmup)



# -- a running pipeline's arrivals, from Prometheus ------------------------------------------

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
