"""The real operator (kopf's KopfRunner with speechops.handlers) against KMock's
Kubernetes emulator (tests/kmock_cluster.py)."""

from __future__ import annotations

import time

import kopf.testing
import pytest

from tests.kmock_cluster import Cluster, wait_for, write_kubeconfig  # noqa: F401  (wait_for for tests)


@pytest.fixture()
def cluster(tmp_path, monkeypatch):
    c = Cluster()
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", c.url)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    yield c
    c.close()


OPERATOR_ARGS = ["run", "-A", "--standalone", "-m", "speechops.handlers"]


class Operator:
    """Starts and stops the real operator in this process (kopf's KopfRunner)."""

    def __init__(self) -> None:
        self.runner: kopf.testing.KopfRunner | None = None
        self.outputs: list[str] = []

    def start(self) -> None:
        self.runner = kopf.testing.KopfRunner(OPERATOR_ARGS, timeout=60)
        self.runner.__enter__()
        time.sleep(1.0)   # watches open

    def stop(self) -> None:
        if self.runner is not None:
            runner, self.runner = self.runner, None
            runner.__exit__(None, None, None)
            self.outputs.append(runner.output)
            assert runner.exception is None, runner.exception


@pytest.fixture()
def operator(cluster, kopf_registry):
    kopf_registry("speechops.handlers")   # the operator's handlers alone, whatever ran before
    op = Operator()
    op.start()
    yield op
    op.stop()
