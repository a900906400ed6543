"""The backtest's fleet: pods in aggregate (counts, not pod objects), so 87 days of 15 s
ticks run in seconds per policy. Load is spread evenly, so a pod told to drain holds its
share of the streams of every age and empties when the youngest of them ends (`Lifetimes`:
with exponential lengths, when it expects under half a stream). `apply` does what the
operator's `plan_replicas` does to pods, through the same `plan_counts`: the serving
target's pods serve, the rest of the fleet drains and waits as warm spares, scale-up takes
draining pods and spares back before it starts new ones, and a pod taken back serves from
the next tick. `set_target` is the HPA's way: no drain.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from speechops.scaling.backtest.options import Options
from speechops.scaling.backtest.trace import Lifetimes
from speechops.scaling.policy import plan_counts


class Fleet:
    """Pods in aggregate: starting (ready at a tick), serving, draining groups, and spares
    (drained, empty, still running)."""

    def __init__(self, arrivals: np.ndarray, opts: Options, initial: int):
        self.opts = opts
        self.delay_ticks = max(int(math.ceil(opts.start_delay / opts.tick)), 0)
        self.lifetimes = Lifetimes(arrivals, opts)
        self.serving = initial
        self.spares = 0
        self.starting: deque[list[int]] = deque()      # [ready_tick, count]
        self.draining: list[tuple[int, int, float, int]] = []  # (start, count, share, empty_tick)

    def alive_since(self, i0: int, t: int) -> float:
        """Streams that arrived up to tick i0 and are still alive at tick t."""
        return self.lifetimes.alive_since(i0, t)

    def draining_streams(self, t: int) -> float:
        total = 0.0
        for start, _, share, _ in self.draining:
            total += share * self.alive_since(start, t)
        return total

    def n_starting(self) -> int:
        return sum(c for _, c in self.starting)

    def n_draining(self) -> int:
        return sum(c for _, c, _, _ in self.draining)

    def n_holding(self) -> int:
        """Draining pods that still hold streams (a pod drained while empty does not)."""
        return sum(c for _, c, share, _ in self.draining if share > 0)

    def n_alive(self) -> int:
        return self.serving + self.n_starting() + self.n_draining() + self.spares

    def advance(self, t: int) -> None:
        while self.starting and self.starting[0][0] <= t:
            self.serving += self.starting.popleft()[1]
        self.spares += sum(g[1] for g in self.draining if g[3] <= t)
        self.draining = [g for g in self.draining if g[3] > t]

    def _share_per_pod(self, t: int, demand: float) -> float:
        """Each serving pod's share of the streams alive now: load is spread evenly over the
        serving pods, which hold what the draining ones do not."""
        on_serving = max(min(demand - self.draining_streams(t), self.serving * self.opts.capacity), 0.0)
        alive = self.alive_since(t, t)
        return (on_serving / self.serving) / alive if alive > 0 and self.serving else 0.0

    def _cancel_starting(self, count: int) -> int:
        """Cancel up to `count` pods still starting (they hold no streams), newest first."""
        cancelled = 0
        while cancelled < count and self.starting:
            take = min(count - cancelled, self.starting[-1][1])
            self.starting[-1][1] -= take
            cancelled += take
            if not self.starting[-1][1]:
                self.starting.pop()
        return cancelled

    def set_target(self, t: int, target: int, demand: float) -> float:
        """The HPA's way: start or remove pods to reach `target` serving+starting pods, with
        no drain. Returns the streams cut."""
        current = self.serving + self.n_starting()
        if target > current:
            self.starting.append([t + self.delay_ticks, target - current])
            return 0.0
        remove = current - target - self._cancel_starting(current - target)
        if not remove or not self.serving:
            return 0.0
        cut = self._share_per_pod(t, demand) * remove * self.alive_since(t, t)
        self.serving -= remove
        return cut

    def apply(self, t: int, serving_target: int, keep: int, demand: float) -> None:
        """What `plan_replicas` does to pods, in counts (the same `plan_counts`):
        `serving_target` ready pods serve, `keep` run in all, the rest drain (warm spares)
        and go only once empty."""
        c = plan_counts(ready=self.serving, answered=self.serving, holding=self.n_draining(), spares=self.spares,
                        starting=self.n_starting(), gone=0, serving_target=serving_target, keep_target=keep)
        # Draining pods back first, the latest drained first (the most streams), then spares.
        back = c.undrain
        while back and self.draining:
            start, count, share, empty_at = self.draining.pop()
            take = min(back, count)
            back -= take
            self.serving += take
            if count > take:
                self.draining.append((start, count - take, share * (count - take) / count, empty_at))
        self.spares -= back
        self.serving += back
        if c.drain:
            share = self._share_per_pod(t, demand)
            self.serving -= c.drain
            # Even an empty pod is a spare only from the next tick, once its gateway has drained.
            empty_at = self.lifetimes.empty_at(t, share * self.alive_since(t, t))
            self.draining.append((t, c.drain, share * c.drain, empty_at))
        self.spares -= c.remove_spares
        self._cancel_starting(c.remove_starting)
        if c.start:
            self.starting.append([t + self.delay_ticks, c.start])
