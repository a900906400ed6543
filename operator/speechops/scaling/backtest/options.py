"""The backtest's settings: the pod model it replays demand against (stream length, pod
capacity, start delay), how it reads the trace, and the policy's settings, whose defaults
are the SpeechPipeline API's (speechops_contract.api): one default table for the
operator, the policy and the backtest."""

from __future__ import annotations

from dataclasses import dataclass

from speechops_contract.api import PipelineSpec, Scaling
from speechops_contract.profiles import PROFILES
from speechops.scaling.controller import TICK

DEFAULT_PROFILE = PipelineSpec.profile    # the tier of a manifest that names none


@dataclass(frozen=True)
class Options:
    # The modelled pod and streams (not API settings): what the shared traces are replayed with.
    duration: float = 240.0
    capacity: int = 16
    start_delay: float = 120.0
    durations: str = "fixed"      # fixed | exponential (with mean `duration`)
    # Reading the trace.
    scale: float = 1.0
    gap: str = "zero"
    warmup: float = 0.3
    # The policy: the operator's defaults.
    util: float = PipelineSpec.capacity.target_utilization
    lead: float = Scaling.lead_time
    scale_down_delay: float = Scaling.scale_down_delay
    scale_down_max_percent: int = Scaling.scale_down_max_percent
    scale_down_period: float = Scaling.scale_down_period
    headroom_sigmas: float = PROFILES[DEFAULT_PROFILE].headroom_sigmas   # where the band starts
    availability: float = PROFILES[DEFAULT_PROFILE].availability         # the objective, a share
    tick: float = TICK
