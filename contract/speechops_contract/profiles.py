"""Latency tiers: one table that maps a profile to every knob it sets.

The gateway's pack window, Triton's batching, the pod's scheduling priority and the
scaler's headroom all come from here, so a tier means the same thing everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    # Gateway: how long the packer gathers frames of many streams into one request.
    pack_window_ms: float
    # Triton dynamic batching: how long a request may wait for others.
    max_queue_delay_us: int
    preferred_batch_sizes: tuple[int, ...]
    # Scheduling: PriorityClass name and value; batch work may be preempted.
    priority_class: str
    priority_value: int
    preemption_policy: str
    # Scaler: how many standard deviations of forecast error to provision above the
    # expected demand (0: provision for the expected value and let work queue).
    headroom_sigmas: float
    # Share of the forecast band held warm as placeholder pods (reserve mode auto).
    reserve_share: float
    # Under overload, may new streams of this tier wait in the gateway instead of
    # being degraded at once?
    may_queue: bool


PROFILES: dict[str, Profile] = {
    "realtime": Profile(
        name="realtime", pack_window_ms=5.0, max_queue_delay_us=0, preferred_batch_sizes=(),
        priority_class="speechops-realtime", priority_value=1_000_000,
        preemption_policy="PreemptLowerPriority", headroom_sigmas=2.5, reserve_share=1.0,
        may_queue=False,
    ),
    "interactive": Profile(
        name="interactive", pack_window_ms=15.0, max_queue_delay_us=5_000, preferred_batch_sizes=(4, 8),
        priority_class="speechops-interactive", priority_value=100_000,
        preemption_policy="PreemptLowerPriority", headroom_sigmas=2.0, reserve_share=0.5,
        may_queue=False,
    ),
    "batch": Profile(
        name="batch", pack_window_ms=100.0, max_queue_delay_us=50_000, preferred_batch_sizes=(8, 16, 32),
        priority_class="speechops-batch", priority_value=1_000,
        preemption_policy="PreemptLowerPriority", headroom_sigmas=0.0, reserve_share=0.0,
        may_queue=True,
    ),
}

# Placeholder pods hold warm nodes at negative priority and never preempt anyone;
# any real worker preempts them (the cluster-autoscaler over-provisioning pattern).
RESERVE_PRIORITY_CLASS = "speechops-reserve"
RESERVE_PRIORITY_VALUE = -10


def profile(name: str) -> Profile:
    return PROFILES[name]
