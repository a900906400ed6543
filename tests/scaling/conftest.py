"""A real Prometheus on 127.0.0.1 with weeks of backfilled demand history.

History is written as OpenMetrics, turned into TSDB blocks by `promtool tsdb
create-blocks-from openmetrics`, and served by the Debian `prometheus` binary started on
a free port with a temporary data dir; the fixture kills it afterwards.
"""

from __future__ import annotations

import math
import shutil
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest

NAMESPACE, PIPELINE = "speech", "callcenter"
HISTORY_DAYS = 15
STEP = 60
STREAM_SECONDS = 240       # the arrivals backfilled beside the demand imply this duration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def demand_at(t: np.ndarray) -> np.ndarray:
    """A call-center day: quiet nights (~40 streams), a busy day (~400), quieter weekends."""
    day = (t % 86400) / 86400
    weekday = ((t // 86400) + 3) % 7          # 1970-01-01 was a Thursday
    shape = 40 + 360 * np.clip(np.sin(np.pi * (day - 0.25) / 0.5), 0, None) ** 2
    return np.where(weekday >= 5, 0.4 * shape, shape)


def _started_counters(times: np.ndarray, rng: np.random.Generator) -> list[str]:
    """The gateways' speechops_streams_started_total, consistent with the demand (arrivals =
    demand / STREAM_SECONDS) and split over three pods: worker-a throughout, worker-b
    restarted (its counter back to 0) two days before the end, worker-c started one day
    before it, so that a few days' replay sees both."""
    restart, born = times[-1] - 2 * 86400, times[-1] - 86400
    pods = np.where(times >= born, 3, 2)                  # the traffic splits over the pods there are
    per_pod = rng.poisson(demand_at(times) * STEP / STREAM_SECONDS / pods, size=(3, len(times)))
    lines = ["# TYPE speechops_streams_started counter"]
    for pod, counts in zip(("worker-a", "worker-b", "worker-c"), per_pod):
        keep = times >= born if pod == "worker-c" else np.ones(len(times), bool)
        total = np.cumsum(np.where(keep, counts, 0))
        if pod == "worker-b":
            total = np.where(times >= restart, total - total[times < restart][-1], total)
        series = f'speechops_streams_started_total{{namespace="{NAMESPACE}",pipeline="{PIPELINE}",pod="{pod}"}}'
        lines += [f"{series} {v} {t:.0f}" for t, v, k in zip(times, total, keep) if k]
    return lines


@dataclass(frozen=True)
class PrometheusServer:
    url: str
    end: float            # time of the last backfilled sample
    namespace: str = NAMESPACE
    pipeline: str = PIPELINE
    stream_seconds: float = STREAM_SECONDS    # what the backfilled arrivals and demand imply
    demand: Callable[[np.ndarray], np.ndarray] = demand_at


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory) -> PrometheusServer:
    binary, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if not binary or not promtool:
        pytest.skip("needs the Debian prometheus and promtool binaries (apt-get install prometheus)")
    root = tmp_path_factory.mktemp("prometheus")
    end = math.floor(time.time() / STEP) * STEP - STEP
    times = np.arange(end - HISTORY_DAYS * 86400, end + 1, STEP)
    rng = np.random.default_rng(7)
    values = np.round(demand_at(times) * (1 + 0.05 * rng.standard_normal(len(times))))
    series = f'speechops_active_streams{{namespace="{NAMESPACE}",pipeline="{PIPELINE}"}}'
    lines = ["# TYPE speechops_active_streams gauge"]
    lines += [f"{series} {max(v, 0):.0f} {t:.0f}" for t, v in zip(times, values)]
    lines += _started_counters(times, rng)
    # What two gateways measured they can hold over the last half hour (admission by load).
    lines += ["# TYPE speechops_stream_capacity gauge"]
    for pod, capacity in (("worker-a", 12), ("worker-b", 9)):
        series = f'speechops_stream_capacity{{namespace="{NAMESPACE}",pipeline="{PIPELINE}",pod="{pod}"}}'
        lines += [f"{series} {capacity} {t:.0f}" for t in times[-30:]]
    lines += ["# TYPE speechops_frame_backlog gauge", f'speechops_frame_backlog{{namespace="{NAMESPACE}",pipeline="{PIPELINE}"}} 0 {end:.0f}', "# EOF"]
    (root / "history.om").write_text("\n".join(lines) + "\n")
    data = root / "data"
    subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", str(root / "history.om"), str(data)],
                   check=True, capture_output=True, timeout=120)
    (root / "prometheus.yml").write_text("global:\n  scrape_interval: 1h\nscrape_configs: []\n")
    port = free_port()
    log = (root / "prometheus.log").open("w")
    proc = subprocess.Popen([binary, f"--config.file={root / 'prometheus.yml'}", f"--storage.tsdb.path={data}",
                             f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=60d",
                             "--query.lookback-delta=5m"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prometheus did not start: {(root / 'prometheus.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield PrometheusServer(url=url, end=float(end))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
