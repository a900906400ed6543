"""The model repository and the tritonserver launcher."""

import os

import psutil
import pytest

from speechops_contract.catalog import MODELS
from speechops_contract import model_config
from speechops_worker.triton import (MODELS_DIR, TritonError, TritonServer, build_model_repository,
                                     checked_in_config)

REGENERATE = ("python -c 'from speechops_worker.triton import write_checked_in_configs as w; w()'")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_checked_in_config_is_the_builders_interactive_output(name):
    path = MODELS_DIR / name / "config.pbtxt"
    assert path.is_file(), f"{path} missing; regenerate with {REGENERATE}"
    assert path.read_text() == checked_in_config(name), f"{path} differs from the builder; regenerate with {REGENERATE}"
    assert (MODELS_DIR / (MODELS[name].code or name) / "1" / "model.py").is_file()


def test_a_variant_is_its_base_models_code_with_its_own_parameters(tmp_path):
    repo = build_model_repository(tmp_path, ["whisper_asr", "whisper_asr_greedy"])
    code = {name: (repo / name / "1" / "model.py").read_bytes() for name in ("whisper_asr", "whisper_asr_greedy")}
    assert code["whisper_asr"] == code["whisper_asr_greedy"]
    assert 'key: "window_s" value: { string_value: "10" }' in (repo / "whisper_asr_greedy" / "config.pbtxt").read_text()
    assert "beam_size" not in (repo / "whisper_asr" / "config.pbtxt").read_text()


def test_repository_holds_each_model_with_the_pipelines_idle_timeout(tmp_path):
    repo = build_model_repository(tmp_path, ["silero_vad_seq", "silero_vad", "audio_stats"], idle_timeout_s=120)
    assert sorted(p.name for p in repo.iterdir()) == ["audio_stats", "silero_vad", "silero_vad_seq"]
    config = (repo / "silero_vad_seq" / "config.pbtxt").read_text()
    assert config == model_config.render("silero_vad_seq", idle_timeout_s=120)
    assert "max_sequence_idle_microseconds: 120000000" in config
    # The packed VAD sweeps a stream's state only after the pipeline's idle timeout.
    assert 'key: "idle_timeout_s" value: { string_value: "120" }' in (repo / "silero_vad" / "config.pbtxt").read_text()
    assert (repo / "audio_stats" / "1" / "model.py").read_bytes() == (MODELS_DIR / "audio_stats" / "1" / "model.py").read_bytes()


def test_unknown_model_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        build_model_repository(tmp_path, ["nope"])


@pytest.mark.triton
def test_a_model_that_fails_to_load_surfaces_tritons_log(tmp_path):
    repo = build_model_repository(tmp_path / "repo", ["audio_stats"])
    (repo / "audio_stats" / "1" / "model.py").write_text(
        "class TritonPythonModel:\n"
        "    def initialize(self, args):\n"
        "        raise RuntimeError('weights are missing here')\n")
    server = TritonServer(repo, startup_timeout_s=60)
    with pytest.raises(TritonError, match="weights are missing here"):
        server.start()
    assert server.pid is None


@pytest.mark.triton
def test_stop_leaves_no_process_behind(tmp_path):
    progress = []
    server = TritonServer(build_model_repository(tmp_path / "repo", ["audio_stats"]), on_progress=progress.append)
    with server:
        pid = server.pid
        children = psutil.Process(pid).children(recursive=True)
        assert children, "the Python backend stub should run as a child"
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)
    assert progress[0] == "starting tritonserver"
    assert "loading model audio_stats" in progress and progress[-1].startswith("Triton ready in")
    assert os.path.exists(tmp_path / "repo")  # the caller's repository is left alone


@pytest.mark.triton
def test_killed_server_restarts_on_the_same_ports(tmp_path):
    import tritonclient.grpc as grpcclient
    server = TritonServer(build_model_repository(tmp_path / "repo", ["audio_stats"]))
    with server:
        address, pid = server.grpc_url, server.pid
        server.kill()
        client = grpcclient.InferenceServerClient(address)
        with pytest.raises(Exception):
            client.is_server_ready()
        server.restart()
        assert server.grpc_url == address and server.pid != pid
        # The old client's channel reconnects by itself (after gRPC's backoff).
        assert wait_until_ready(client, timeout_s=15)
        client.close()


def wait_until_ready(client, timeout_s: float) -> bool:
    import time
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if client.is_server_ready():
                return True
        except Exception:
            time.sleep(0.2)
    return False
