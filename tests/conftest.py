"""Shared test fixtures. Heavier fixtures (tritonserver, prometheus, KMock) live in the
conftest.py of the test folder that needs them."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SOURCE_ROOTS = [REPO / "contract", REPO / "operator", REPO / "worker"]

# Processes the tests start (the operator, the gateway, speechops) run this checkout's
# code too, not whatever an editable install points at.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(p) for p in SOURCE_ROOTS] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture
def kopf_registry():
    """A fresh kopf registry for one test's operator run.

    kopf registers handlers in a process-wide default registry at import time, and
    Python imports a module once: without this, an operator started by one test also
    runs every handler module an earlier test imported. Returns a function that
    (re)imports handler modules into the fresh registry."""
    import importlib
    import sys

    import kopf

    previous = kopf.get_default_registry()
    kopf.set_default_registry(kopf.OperatorRegistry())

    def load(*modules: str) -> None:
        for name in modules:
            if name in sys.modules:
                importlib.reload(sys.modules[name])
            else:
                importlib.import_module(name)

    yield load
    kopf.set_default_registry(previous)


# ---- a real Kubernetes API server (tests/envtest.py) ----------------------------------

@pytest.fixture(scope="session")
def envtest_assets() -> Path:
    """The envtest binaries' directory (KUBEBUILDER_ASSETS). Unset: the real-server tests
    skip and say how to get the binaries. Set but incomplete: they fail (ControlPlane)."""
    from tests.envtest import HOW_TO_GET, assets_dir
    assets = assets_dir()
    if assets is None:
        pytest.skip(HOW_TO_GET)
    return assets


@pytest.fixture(scope="module")
def control_plane(envtest_assets):
    """etcd + kube-apiserver (RBAC on, audit log) + kube-controller-manager, one per test
    module (~5-10 s to start)."""
    from tests.envtest import ControlPlane
    with ControlPlane(controller_manager=True, assets=envtest_assets) as cp:
        yield cp
