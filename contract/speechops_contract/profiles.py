"""Latency tiers: one table that maps a profile to every knob it sets.

The gateway's pack window and latency target (what it admits streams against), the
pod's scheduling priority and the scaler's headroom all come from here, so a tier means
the same thing everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    # Gateway: how long the packer gathers frames of many streams into one request.
    pack_window_ms: float
    # Gateway: end of speech -> final, p90 over the last seconds. A replica admits a
    # stream only while it meets this; past it, new streams get over_capacity.
    final_latency_target_s: float
    # Scheduling: PriorityClass name and value; batch work may be preempted.
    priority_class: str
    priority_value: int
    preemption_policy: str
    # Scaler: how many standard deviations of forecast error to provision above the
    # expected demand (0: provision for the expected value and let work queue).
    headroom_sigmas: float
    # Share of the forecast band held warm as placeholder pods (reserve mode auto).
    reserve_share: float
    # Default availability objective: the share of demanded stream-minutes that must find
    # ready capacity, over 30 days (spec.scaling.availability overrides it). The scaler
    # starts its band at headroom_sigmas and moves it to spend this objective's budget.
    availability: float


PROFILES: dict[str, Profile] = {
    "realtime": Profile(
        name="realtime", pack_window_ms=5.0, final_latency_target_s=0.5,
        priority_class="speechops-realtime", priority_value=1_000_000,
        preemption_policy="PreemptLowerPriority", headroom_sigmas=2.5, reserve_share=1.0,
        availability=0.9999,
    ),
    "interactive": Profile(
        name="interactive", pack_window_ms=15.0, final_latency_target_s=1.0,
        priority_class="speechops-interactive", priority_value=100_000,
        preemption_policy="PreemptLowerPriority", headroom_sigmas=2.0, reserve_share=0.5,
        availability=0.999,
    ),
    "batch": Profile(
        name="batch", pack_window_ms=100.0, final_latency_target_s=5.0,
        priority_class="speechops-batch", priority_value=1_000,
        preemption_policy="PreemptLowerPriority", headroom_sigmas=0.0, reserve_share=0.0,
        availability=0.99,
    ),
}

# Placeholder pods hold warm nodes at negative priority and never preempt anyone;
# any real worker preempts them (the cluster-autoscaler over-provisioning pattern).
RESERVE_PRIORITY_CLASS = "speechops-reserve"
RESERVE_PRIORITY_VALUE = -10


def profile(name: str) -> Profile:
    return PROFILES[name]
