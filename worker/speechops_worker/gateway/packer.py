"""Packs rows of many streams into one Triton request per model and pack window.

Why: one gRPC request per 20 ms frame costs more gateway and Triton CPU than the frame's
own inference; packing the rows that arrive within a few milliseconds cuts both by an order
of magnitude or more (docs/benchmarks/gateway-2026-11-25.md; docs/architecture.md, "Audio path"). A part is what one stream contributes: a dict of input
name -> array whose first axis is rows. Parts are concatenated in arrival order (2-D
float rows of different widths are zero-padded), and each output is sliced back per part.

A request leaves at once when none is in flight, else after one pack window (by profile)
or when an answer frees a slot: low load pays no window, high load packs densely.
At most `max_in_flight` requests per model are in Triton at once; beyond that rows wait
here (the backlog metric), so an overload queues in the gateway and never floods Triton.
That wait is also the overload signal (`recent_wait`): a slow model on an idle machine
answers late but keeps no queue, an overloaded one builds a queue.
Final results may jump the queue (`urgent`): a user waits on them.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

Part = dict[str, np.ndarray]
Infer = Callable[[str, dict[str, np.ndarray], tuple[str, ...]], dict[str, np.ndarray]]


class InferenceUnavailable(RuntimeError):
    """Triton did not answer (down, restarting, or refused the request)."""


def concat_parts(parts: list[Part]) -> dict[str, np.ndarray]:
    """Row-wise concatenation of parts; 2-D arrays of different widths are zero-padded."""
    out: dict[str, np.ndarray] = {}
    for name in parts[0]:
        arrays = [p[name] for p in parts]
        if arrays[0].ndim == 2 and len({a.shape[1] for a in arrays}) > 1:
            width = max(a.shape[1] for a in arrays)
            padded = np.zeros((sum(a.shape[0] for a in arrays), width), dtype=arrays[0].dtype)
            row = 0
            for a in arrays:
                padded[row:row + a.shape[0], : a.shape[1]] = a
                row += a.shape[0]
            out[name] = padded
        else:
            out[name] = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
    return out


def pcm16_to_float(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """VAD rows travel as int16 through the gateway; one conversion per packed request."""
    audio = inputs["AUDIO"]
    if audio.dtype == np.int16:
        inputs["AUDIO"] = audio.astype(np.float32) * np.float32(1 / 32768)
    return inputs


def split_outputs(outputs: dict[str, np.ndarray], row_counts: list[int]) -> list[dict[str, np.ndarray]]:
    """The inverse of concat_parts for outputs with one entry per row."""
    bounds = np.cumsum([0] + row_counts)
    return [{k: v[bounds[i]:bounds[i + 1]] for k, v in outputs.items()} for i in range(len(row_counts))]


@dataclass
class _Waiting:
    part: Part
    rows: int
    future: asyncio.Future
    queued_at: float = field(default_factory=time.perf_counter)


class Packer:
    """One per model. `submit(part)` -> awaitable dict of output arrays for that part."""

    def __init__(self, model: str, outputs: tuple[str, ...], infer: Infer, *, window_s: float,
                 max_in_flight: int = 2, max_rows: int = 4096, on_latency: Callable[[float], None] | None = None,
                 prepare: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None):
        self.model = model
        self.outputs = outputs
        self.window_s = window_s
        self.max_in_flight = max_in_flight
        self.max_rows = max_rows
        self._infer = infer
        self._on_latency = on_latency
        self._prepare = prepare or (lambda inputs: inputs)
        self._urgent: deque[_Waiting] = deque()
        self._normal: deque[_Waiting] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._in_flight = 0
        self._pool = ThreadPoolExecutor(max_in_flight, thread_name_prefix=f"infer-{model}")
        self.queued_rows = 0
        self._busy_total = 0.0              # seconds with a request in Triton (utilisation)
        self._busy_since: float | None = None
        self.requests = 0
        self.rows_sent = 0
        # (sent_at, seconds the oldest row of the request waited here) of recent
        # requests: the degradation controller reads these.
        self.recent_waits: deque[tuple[float, float]] = deque(maxlen=256)

    def submit(self, part: Part, urgent: bool = False) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        rows = len(next(iter(part.values())))
        waiting = _Waiting(part, rows, loop.create_future())
        (self._urgent if urgent else self._normal).append(waiting)
        self.queued_rows += rows
        if self._timer is None and self._in_flight < self.max_in_flight:
            # Nothing in Triton: send at once (no window to pay at low load). Otherwise
            # gather for one window; under load the in-flight requests pack rows anyway.
            delay = 0 if urgent or self._in_flight == 0 else self.window_s
            self._timer = loop.call_later(delay, self._flush) if delay else loop.call_soon(self._flush)
        return waiting.future

    def _take(self) -> list[_Waiting]:
        batch: list[_Waiting] = []
        rows = 0
        for queue in (self._urgent, self._normal):
            while queue and (not batch or rows + queue[0].rows <= self.max_rows):
                item = queue.popleft()
                if item.future.cancelled():
                    self.queued_rows -= item.rows
                    continue
                batch.append(item)
                rows += item.rows
        self.queued_rows -= rows
        return batch

    def _flush(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        while (self._urgent or self._normal) and self._in_flight < self.max_in_flight:
            batch = self._take()
            if not batch:
                break
            now = time.perf_counter()
            self.recent_waits.append((now, now - min(w.queued_at for w in batch)))
            if self._in_flight == 0:
                self._busy_since = now
            self._in_flight += 1
            inputs = self._prepare(concat_parts([w.part for w in batch]))
            fut = loop.run_in_executor(self._pool, self._infer, self.model, inputs, self.outputs)
            fut.add_done_callback(lambda f, batch=batch: self._done(f, batch))

    def _done(self, fut: asyncio.Future, batch: list[_Waiting]) -> None:
        self._in_flight -= 1
        now = time.perf_counter()
        if self._in_flight == 0:
            self._busy_total += now - self._busy_since
            self._busy_since = None
        self.requests += 1
        exc = fut.exception()
        if exc is None:
            results = split_outputs(fut.result(), [w.rows for w in batch])
            for w, result in zip(batch, results):
                if not w.future.done():
                    w.future.set_result(result)
            self.rows_sent += sum(w.rows for w in batch)
        else:
            err = exc if isinstance(exc, InferenceUnavailable) else InferenceUnavailable(f"{self.model}: {exc}")
            for w in batch:
                if not w.future.done():
                    w.future.set_exception(err)
        oldest = max(now - w.queued_at for w in batch)
        if self._on_latency:
            self._on_latency(oldest)
        # Rows that queued while the window was full have waited long enough: send now.
        if (self._urgent or self._normal) and self._timer is None:
            self._timer = asyncio.get_running_loop().call_soon(self._flush)  # type: ignore[assignment]

    def busy_seconds(self) -> float:
        """Seconds so far with at least one request in Triton; its rate is the model's
        utilisation as the gateway sees it (admission)."""
        total = self._busy_total
        if self._busy_since is not None:
            total += time.perf_counter() - self._busy_since
        return total

    def recent_wait(self, horizon_s: float, quantile: float = 0.9) -> float | None:
        """Quantile of how long requests sent in the last `horizon_s` waited here before
        going to Triton, or None if idle. Rows still waiting count with their age, so a
        stuck Triton shows up too."""
        now = time.perf_counter()
        values = [wait for t, wait in self.recent_waits if now - t <= horizon_s]
        for queue in (self._urgent, self._normal):
            if queue:
                values.append(now - queue[0].queued_at)
        if not values:
            return None
        return float(np.quantile(values, quantile))

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for queue in (self._urgent, self._normal):
            while queue:
                w = queue.popleft()
                if not w.future.done():
                    w.future.set_exception(InferenceUnavailable("gateway shutting down"))
        self._pool.shutdown(wait=False, cancel_futures=True)
