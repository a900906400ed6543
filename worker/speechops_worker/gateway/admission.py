"""Admission by load: how many streams of a pipeline this replica can hold while it still
meets its tier's final-latency target (`profiles.Profile.final_latency_target_s`).

Every control tick the gateway feeds `Admission.update` what it measured over the last
`horizon_s`, and a new stream is admitted while the open streams are fewer than
`capacity` (and `spec.capacity.streamsPerReplica`, the hard cap):

- **utilisation** of the pipeline's utterance models (ASR, analytics): the share of time
  a request was in Triton. Each open stream costs about utilisation / streams, so the
  streams that still fit are (ceiling - utilisation) / that cost. Packing makes a
  stream's cost fall as streams are added, so the estimate errs low and rises with load.
  VAD is left out: its packed rows cost so little each that one stream's share says
  nothing about a thousand's; its queue wait stands for it.
- **final latency** (end of speech -> final, p90): above the target, the replica holds
  more than it can serve; capacity drops to the streams it holds, scaled by how far over.
- **queue wait** in the gateway (p90, VAD and utterance models): above half the target,
  no more streams.
- Capacity rises at most by an eighth (at least one stream) per second, from
  `SLOW_START` on a fresh replica, and falls at once: a stream's cost shows only seconds
  after it is admitted (its first partials, then its finals), so a burst is admitted in
  steps the measurements can follow, and an overestimate is caught before it is filled.

The target is the user's: last speech audio -> final. The gateway measures from the
moment VAD decided speech ended, which comes `silence_s` later (the VAD's
min_silence_chunks), so that much of the target is spent before its clock starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

UTILISATION_CEILING = 0.8     # busier than this, an utterance model's queue (and latency) grows fast
MEASURABLE = 0.05             # below this utilisation the cost per stream is noise
SLOW_START = 4
GROWTH_EVERY_S = 1.0


@dataclass(frozen=True)
class Load:
    """What one pipeline's streams measured over the horizon (None: nothing to measure)."""
    now: float                    # monotonic seconds
    streams: int                  # open streams of this pipeline
    model_streams: int            # open streams of every pipeline sharing its utterance models
    utilisation: float | None     # the busiest utterance model's busy share, 0..1
    final_p90: float | None       # seconds
    wait_p90: float | None        # the longest queue wait p90 of its models, seconds


class Admission:
    def __init__(self, target_s: float, hard_cap: int, utterance_models: bool, silence_s: float = 0.0):
        self.target_s = target_s
        self.budget_s = max(target_s - silence_s, target_s / 4)   # what the gateway's own clock may spend
        self.hard_cap = hard_cap
        self.utterance_models = utterance_models
        self.capacity = hard_cap if not utterance_models else min(SLOW_START, hard_cap)
        self.reason = "a fresh replica" if utterance_models else "streamsPerReplica"
        self._known: int | None = None      # the last capacity the utilisation measured
        self._grown_at = -float("inf")

    def admits(self, streams: int) -> bool:
        return streams < min(self.capacity, self.hard_cap)

    def update(self, load: Load) -> int:
        n = load.streams
        cap, reason = self.hard_cap, "streamsPerReplica"
        if self.utterance_models:
            u = load.utilisation
            if u is not None and u >= MEASURABLE and load.model_streams > 0:
                per_stream = u / load.model_streams
                self._known = max(n + math.floor((UTILISATION_CEILING - u) / per_stream), 1)
                reason = f"utilisation {u:.0%} with {load.model_streams} streams"
            else:
                reason = "models idle: the last measurement" if self._known is not None else "a fresh replica"
            estimate = self.hard_cap if self._known is None else self._known
            if estimate > self.capacity:       # rise slowly: a new stream's cost shows seconds later
                if load.now - self._grown_at < GROWTH_EVERY_S:
                    estimate = self.capacity
                else:
                    estimate = min(estimate, self.capacity + max(1, self.capacity // 8))
                    self._grown_at = load.now
            cap = min(cap, estimate)
        if load.final_p90 is not None and load.final_p90 > self.budget_s:
            over = max(1, math.floor(n * self.budget_s / load.final_p90))
            if over < cap:
                cap, reason = over, f"final p90 {load.final_p90:.2f}s + end-of-speech wait over the {self.target_s:g}s target"
        if load.wait_p90 is not None and load.wait_p90 > self.budget_s / 2 and n < cap:
            cap, reason = n, f"queue wait p90 {load.wait_p90:.2f}s"
        # Never below one stream: a replica that holds none measures nothing, and would
        # refuse every stream for good on a measurement taken under another load.
        cap = max(cap, 1)
        self.capacity, self.reason = cap, reason
        return cap
