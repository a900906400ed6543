"""Admission by load: how many streams of a pipeline this replica can hold while it still
meets its tier's final-latency target (`profiles.Profile.final_latency_target_s`).

Every control tick the gateway feeds `Admission.update` what it measured over the last
`horizon_s`, and a new stream is admitted while the open streams are fewer than
`capacity` (and `spec.capacity.streamsPerReplica`, the hard cap). Capacity is a window
that moves like a congestion window, since a stream's cost is not linear (packing makes
each stream cheaper as streams are added) and shows only seconds after it is admitted:

- it falls at once when the replica misses: the final latency (end of speech -> final,
  p90) over the target, to the streams it holds scaled by how far over; the utterance
  models (ASR, analytics) busier than `UTILISATION_CEILING`, or requests queueing in the
  gateway (p90) past half the target, to the streams it holds;
- it rises by an eighth (at least one stream) per second while the replica meets all of
  them, its streams fill the window and it has seen what the last window costs: a final
  whose end of speech came after the window last moved (a final measured earlier says
  nothing of the streams added since, and growing on it outruns the feedback), or
  utterance models under `IDLE_SHARE` busy (partials show a new stream's cost there within
  a second); a fresh replica starts at `SLOW_START`, so a burst is admitted in steps the
  measurements can follow;
- it never falls below one stream: a replica that holds none measures nothing again.

The target is the user's: last speech audio -> final. The gateway measures from the
moment VAD decided speech ended, which comes `silence_s` later (the VAD's
min_silence_chunks), so that much of the target is spent before its clock starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

UTILISATION_CEILING = 0.9     # busier than this, an utterance model's queue (and latency) grows fast
IDLE_SHARE = 0.5              # less busy than this, the models have room for the next step
SLOW_START = 4
GROWTH_EVERY_S = 1.0


@dataclass(frozen=True)
class Load:
    """What one pipeline's streams measured over the horizon (None: nothing to measure)."""
    now: float                    # monotonic seconds
    streams: int                  # open streams of this pipeline
    utilisation: float | None     # the busiest utterance model's busy share, 0..1
    final_p90: float | None       # seconds
    wait_p90: float | None        # the longest queue wait p90 of its models, seconds
    newest_final_from: float | None = None   # when the newest final's clock started (end of speech)


class Admission:
    def __init__(self, target_s: float, hard_cap: int, utterance_models: bool, silence_s: float = 0.0):
        self.target_s = target_s
        self.budget_s = max(target_s - silence_s, target_s / 4)   # what the gateway's own clock may spend
        self.hard_cap = hard_cap
        self.utterance_models = utterance_models
        # VAD-only pipelines: packed VAD rows cost so little each that the window would
        # only slow a burst down; the queue wait alone stands for their load.
        self.capacity = hard_cap if not utterance_models else min(SLOW_START, hard_cap)
        self.reason = "a fresh replica" if utterance_models else "streamsPerReplica"
        self._grown_at = -float("inf")

    def admits(self, streams: int) -> bool:
        return streams < min(self.capacity, self.hard_cap)

    def update(self, load: Load) -> int:
        n, cap = load.streams, min(self.capacity, self.hard_cap)
        reason = self.reason
        missed = None
        if load.final_p90 is not None and load.final_p90 > self.budget_s:
            missed = (max(1, math.floor(n * self.budget_s / load.final_p90)),
                      f"final p90 {load.final_p90:.2f}s + end-of-speech wait over the {self.target_s:g}s target")
        elif self.utterance_models and load.utilisation is not None and load.utilisation > UTILISATION_CEILING:
            missed = n, f"utterance models {load.utilisation:.0%} busy"
        elif load.wait_p90 is not None and load.wait_p90 > self.budget_s / 2:
            missed = n, f"queue wait p90 {load.wait_p90:.2f}s"
        if missed is not None:
            if missed[0] < cap:
                cap, reason = missed
            self._grown_at = load.now            # hold before rising again
        elif not self.utterance_models:
            cap, reason = self.hard_cap, "streamsPerReplica"
        elif n >= cap - 1 and load.now - self._grown_at >= GROWTH_EVERY_S and self._window_measured(load):
            cap, self._grown_at = min(cap + max(1, cap // 8), self.hard_cap), load.now
            reason = f"{n} streams served within the target"
        cap = max(cap, 1)
        self.capacity, self.reason = cap, reason
        return cap

    def _window_measured(self, load: Load) -> bool:
        if load.utilisation is not None and load.utilisation < IDLE_SHARE:
            return True
        return load.newest_final_from is not None and load.newest_final_from >= self._grown_at
