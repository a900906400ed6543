"""Worker fixtures: one real tritonserver with every model, shared by the worker tests
(models and gateway) for the whole session, stopped at the end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from speechops_contract.catalog import MODELS
from speechops_worker.triton import TritonServer, build_model_repository

# Every model the worker ships; the gateway tests use the same server.
SERVED_MODELS = tuple(MODELS)


def start_triton(repo_dir: Path, models=SERVED_MODELS, **repository_options) -> TritonServer:
    """A started TritonServer over a fresh repository; the caller stops it."""
    repo = build_model_repository(repo_dir, models, **repository_options)
    server = TritonServer(repo, startup_timeout_s=240)
    server.start()
    return server


@pytest.fixture(scope="session")
def triton_server(tmp_path_factory) -> Iterator[TritonServer]:
    server = start_triton(tmp_path_factory.mktemp("model-repository"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def triton_client(triton_server):
    import tritonclient.grpc as grpcclient
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    try:
        yield client
    finally:
        client.close()
