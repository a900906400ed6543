"""What the scaler reads: Prometheus (history and live demand) and the pods themselves.

Every failure becomes a `SignalError` with a CamelCase reason (PrometheusUnavailable,
PrometheusSlow, PrometheusGarbage) that lands in the ScalingActive condition, so a user
sees why the scaler fell back without reading operator logs.
"""

from __future__ import annotations

import datetime
import math
import os
import statistics
import urllib.error
import urllib.request
from dataclasses import dataclass
from string import Template
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from prometheus_client.parser import text_string_to_metric_families
from urllib3.util.retry import Retry

from speechops_contract import names

_SELECTOR = '{namespace="$namespace",pipeline="$pipeline"}'
DEFAULT_QUERIES: dict[str, str] = {
    # Demand: streams open on the pipeline's gateways (history and now).
    "streams": f"sum({names.M_ACTIVE_STREAMS}{_SELECTOR})",
    "backlog": f"sum({names.M_BACKLOG}{_SELECTOR})",
    # The most streams any of the pipeline's gateways measured it can hold within the
    # tier's latency target, over the last 10 minutes (a replica that just started
    # admits in steps, so one moment of one pod would understate it).
    "capacity": f"max(max_over_time({names.M_STREAM_CAPACITY}{_SELECTOR}[10m]))",
    "p99": (f"histogram_quantile(0.99, sum by (le) "
            f"(rate({names.M_STAGE_LATENCY}_bucket{_SELECTOR}[5m])))"),
}
STEP = 60.0                 # history resolution
MAX_POINTS = 10_000         # Prometheus refuses ranges over 11 000 points; stay under


# What a user whose Prometheus URL is wrong (a quickstart's in-cluster address on a
# cluster without that Prometheus) needs to read in the condition.
URL_HINT = "set spec.scaling.prometheusUrl to the Prometheus that scrapes this pipeline's gateways"


class SignalError(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


def render_query(template: str, namespace: str, pipeline: str) -> str:
    """`$namespace` and `$pipeline` substituted; other `$` text is left alone."""
    return Template(template).safe_substitute(namespace=namespace, pipeline=pipeline)


def queries_for(overrides: Mapping[str, str], namespace: str, pipeline: str) -> dict[str, str]:
    unknown = set(overrides) - set(DEFAULT_QUERIES)
    if unknown:
        raise SignalError("QueryInvalid", f"spec.scaling.queries: unknown keys {sorted(unknown)}; "
                                          f"known: {sorted(DEFAULT_QUERIES)}")
    merged = {**DEFAULT_QUERIES, **{k: v for k, v in overrides.items() if v}}
    return {k: render_query(v, namespace, pipeline) for k, v in merged.items()}


def _matrix(result: Any, what: str) -> list[tuple[tuple, np.ndarray, np.ndarray]]:
    """Range result -> (labels, times, values) per series, finite points only. Raises
    PrometheusGarbage on a shape that is not a Prometheus matrix."""
    if not isinstance(result, list):
        raise SignalError("PrometheusGarbage", f"{what}: expected a list of series, got {type(result).__name__}")
    out = []
    for series in result:
        values = series.get("values") if isinstance(series, dict) else None
        if not isinstance(values, list):
            raise SignalError("PrometheusGarbage", f"{what}: a series without 'values'")
        times, points = [], []
        for point in values:
            try:
                t, v = float(point[0]), float(point[1])
            except (TypeError, ValueError, IndexError):
                raise SignalError("PrometheusGarbage", f"{what}: unreadable point {point!r}") from None
            if math.isfinite(v):
                times.append(t)
                points.append(v)
        labels = tuple(sorted((series.get("metric") or {}).items()))
        out.append((labels, np.array(times), np.array(points)))
    return out


def sum_series(series: Iterable[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """(times, values) pairs -> one (times, values), summed where times coincide."""
    acc: dict[float, float] = {}
    for times, values in series:
        for t, v in zip(np.asarray(times).tolist(), np.asarray(values).tolist()):
            acc[t] = acc.get(t, 0.0) + v
    times = np.array(sorted(acc))
    return times, np.array([acc[t] for t in times])


def _instant_value(result: Any, what: str) -> float | None:
    if not isinstance(result, list):
        raise SignalError("PrometheusGarbage", f"{what}: expected a vector, got {type(result).__name__}")
    if not result:
        return None
    total = 0.0
    for series in result:
        try:
            v = float(series["value"][1])
        except (TypeError, ValueError, KeyError, IndexError):
            raise SignalError("PrometheusGarbage", f"{what}: unreadable sample {series!r}") from None
        if math.isnan(v):
            return None
        total += v
    return total


class PrometheusSource:
    """Queries through prometheus-api-client with a timeout; errors become SignalError."""

    def __init__(self, url: str, timeout: float = 5.0):
        self.url = url
        self.timeout = timeout
        # No client-side retries: the next tick is the retry, and a retried timeout would
        # stall the timer for several timeouts and be reported as a connection error.
        self.client = PrometheusConnect(url=url, disable_ssl=True, timeout=timeout, retry=Retry(total=0))

    def _call(self, fn: Callable[[], Any], what: str) -> Any:
        try:
            return fn()
        except requests.exceptions.JSONDecodeError as exc:
            raise SignalError("PrometheusGarbage", f"{what}: answer is not JSON ({str(exc)[:120]})") from None
        except requests.Timeout:
            raise SignalError("PrometheusSlow", f"{what}: no answer from {self.url} within {self.timeout:g}s") from None
        except requests.RequestException as exc:
            if "timed out" in str(exc).lower():
                raise SignalError("PrometheusSlow", f"{what}: no answer from {self.url} within {self.timeout:g}s") from None
            raise SignalError("PrometheusUnavailable", f"{what}: {self.url} unreachable ({type(exc).__name__}); "
                                                       f"{URL_HINT}") from None
        except PrometheusApiClientException as exc:
            raise SignalError("PrometheusError", f"{what}: {str(exc)[:200]}") from None
        except ValueError as exc:   # a body that is not JSON
            raise SignalError("PrometheusGarbage", f"{what}: {str(exc)[:200]}") from None

    def history(self, query: str, start: float, end: float, step: float = STEP) -> tuple[np.ndarray, np.ndarray]:
        """query_range over [start, end] at `step`, in chunks Prometheus accepts, summed over series."""
        times, values = [], []
        for result in self._ranges(query, start, end, step):
            t, v = sum_series((t, v) for _, t, v in _matrix(result, "history"))
            times.append(t)
            values.append(v)
        if not times:
            return np.array([]), np.array([])
        return np.concatenate(times), np.concatenate(values)

    def history_by_series(self, query: str, start: float, end: float,
                          step: float = STEP) -> list[tuple[np.ndarray, np.ndarray]]:
        """Like `history`, one (times, values) per series (by its labels) instead of their sum:
        counters must be differenced per series, before a sum hides one pod's reset."""
        merged: dict[tuple, list[tuple[np.ndarray, np.ndarray]]] = {}
        for result in self._ranges(query, start, end, step):
            for labels, t, v in _matrix(result, "history"):
                merged.setdefault(labels, []).append((t, v))
        return [(np.concatenate([t for t, _ in parts]), np.concatenate([v for _, v in parts]))
                for parts in merged.values()]

    def _ranges(self, query: str, start: float, end: float, step: float):
        chunk = step * MAX_POINTS
        lo = start
        while lo < end:
            hi = min(lo + chunk, end)
            yield self._call(lambda: self.client.custom_query_range(
                query, start_time=_dt(lo), end_time=_dt(hi), step=f"{step:g}"), "history")
            lo = hi + step

    def instant(self, query: str, what: str) -> float | None:
        return _instant_value(self._call(lambda: self.client.custom_query(query), what), what)


def _dt(t: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc)


# -- Kubernetes: pods ------------------------------------------------------------------------

def _parse_time(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def pod_is_ready(pod: Mapping[str, Any]) -> bool:
    conds = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


def pod_start_seconds(pod: Mapping[str, Any]) -> float | None:
    """Creation to Ready for one pod, from its Ready condition's transition time: the first
    Ready only while the pod has not gone NotReady since (see `first_ready`)."""
    created = _parse_time((pod.get("metadata") or {}).get("creationTimestamp"))
    conds = (pod.get("status") or {}).get("conditions") or []
    ready = next((c for c in conds if c.get("type") == "Ready" and c.get("status") == "True"), None)
    became = _parse_time(ready.get("lastTransitionTime")) if ready else None
    if created is None or became is None or became < created:
        return None
    return became - created


def first_ready(pods: Sequence[Mapping[str, Any]], known: dict[str, float]) -> None:
    """Keeps `known` (pod uid -> seconds from creation to its first Ready) for the pods
    there are. Ready's lastTransitionTime moves on every NotReady -> Ready (a drained spare
    taken back, a failed probe), so a pod's start is read once, the first tick it is seen
    ready, and kept; a pod first seen draining or restarted is not read at all."""
    present = set()
    for pod in pods:
        meta = pod.get("metadata") or {}
        uid = meta.get("uid") or meta.get("name")
        present.add(uid)
        if uid in known or (meta.get("annotations") or {}).get(names.ANNOTATION_DRAINING) == "true":
            continue
        restarts = sum(c.get("restartCount", 0) for c in (pod.get("status") or {}).get("containerStatuses") or [])
        start = pod_start_seconds(pod) if not restarts else None
        if start is not None:
            known[uid] = start
    for uid in set(known) - present:
        del known[uid]


def measured_start_time(starts: Iterable[float]) -> float | None:
    """The slowest typical pod start (90th percentile) of the pods' first starts."""
    samples = sorted(starts)
    if not samples:
        return None
    if len(samples) == 1:
        return samples[0]
    return statistics.quantiles(samples, n=10, method="inclusive")[-1]


# -- the gateways themselves -----------------------------------------------------------------

def admin_port() -> int:
    # Overridable so tests can run real gateways' metrics endpoints on a free port.
    return int(os.environ.get("SPEECHOPS_GATEWAY_ADMIN_PORT", names.GATEWAY_ADMIN_PORT))


def pod_address(pod: Mapping[str, Any]) -> str | None:
    return (pod.get("status") or {}).get("podIP")


def admin_url(ip: str, path: str) -> str:
    """A pod's admin endpoint; an IPv6 pod IP goes in brackets."""
    host = f"[{ip}]" if ":" in ip else ip
    return f"http://{host}:{admin_port()}{path}"


# Refusals that mean no ready capacity (the availability objective's unserved requests):
# over capacity, or a draining pod.
UNSERVED_KINDS = ("capacity", "drain")


@dataclass(frozen=True)
class GatewayReading:
    """One gateway's /metrics: live streams, backlog (VAD chunks), and its counters of
    streams admitted and refused for want of capacity, since the pod started."""
    streams: float
    backlog: float = 0.0
    admitted: float = 0.0
    refused: float = 0.0


def read_gateway(pod: Mapping[str, Any], timeout: float = 1.0) -> GatewayReading | None:
    """One pod's gateway metrics; None when it does not answer or has no stream gauge."""
    ip = pod_address(pod)
    if not ip:
        return None
    try:
        with urllib.request.urlopen(admin_url(ip, "/metrics"), timeout=timeout) as resp:
            text = resp.read().decode("utf-8", "replace")
    except (OSError, urllib.error.URLError, ValueError):
        return None
    found: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            # The parser names counters without their _total.
            if family.name == names.M_ACTIVE_STREAMS:
                found["streams"] = sum(s.value for s in family.samples)
            elif family.name == names.M_BACKLOG:
                found["backlog"] = sum(s.value for s in family.samples)
            elif family.name == names.M_STREAMS_STARTED.removesuffix("_total"):
                found["admitted"] = sum(s.value for s in family.samples if s.name.endswith("_total"))
            elif family.name == names.M_REJECTED_STREAMS.removesuffix("_total"):
                found["refused"] = sum(s.value for s in family.samples
                                       if s.name.endswith("_total") and s.labels.get("kind") in UNSERVED_KINDS)
    except ValueError:
        return None
    if "streams" not in found:
        return None
    return GatewayReading(**found)


def read_pod_streams(pod: Mapping[str, Any], timeout: float = 1.0) -> float | None:
    """Live streams on one pod from its gateway's /metrics; None when it does not answer."""
    reading = read_gateway(pod, timeout)
    return None if reading is None else reading.streams
