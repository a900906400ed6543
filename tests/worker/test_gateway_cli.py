"""`speechops up`, `speechops stream` and `speechops demo` as a user runs them: real
processes, real tritonserver, output read from their stdout."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import speech
from speechops_worker.gateway.transcript import word_error_rate
from speechops_worker.local import SAMPLE_TEXT, SAMPLE_WAV

# tests/conftest.py put this checkout's contract/, operator/ and worker/ on PYTHONPATH:
# `speechops` (operator/speechops/cli.py) is this checkout's too, not an installed one.
ENV = dict(os.environ, PYTHONUNBUFFERED="1")


def speechops(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "speechops.cli", *args], capture_output=True, text=True,
                          env=kwargs.pop("env", ENV), timeout=kwargs.pop("timeout", 120), **kwargs)


def test_shipped_sample_is_16khz_mono_pcm16_speech():
    from speechops_worker.client import read_wav
    pcm = read_wav(SAMPLE_WAV)
    assert 3 * 16000 < len(pcm) < 15 * 16000
    assert len(SAMPLE_TEXT.read_text().split()) >= 10


def test_stream_refuses_a_wav_it_cannot_send(tmp_path):
    wav = speech.write_wav(tmp_path / "8k.wav", speech.synthesize("Hello.", sample_rate=8000), sample_rate=8000)
    result = speechops("stream", str(wav))
    assert result.returncode == 2
    assert "16 kHz mono" in result.stderr and "sox" in result.stderr


def test_stream_without_a_gateway_says_how_to_start_one(tmp_path):
    from speechops_worker.triton import free_ports
    result = speechops("stream", str(SAMPLE_WAV), "--url", f"ws://127.0.0.1:{free_ports(1)[0]}/v1/stream")
    assert result.returncode == 1
    assert "no gateway at" in result.stderr and "speechops up" in result.stderr


def test_up_reports_every_spec_problem_with_its_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: SpeechPipeline\nmetadata: {name: x}\nspec:\n  profile: turbo\n"
                   "  stages: [{name: a, model: nope}]\n")
    result = speechops("up", str(bad))
    assert result.returncode == 2
    assert "spec.profile" in result.stderr and "spec.stages[0].model" in result.stderr


@pytest.mark.triton

def ready(up: subprocess.Popen, pattern: str, lines: list[str], timeout: float = 120) -> str | None:
    """Reads `speechops up`'s output into `lines` until a line matches `pattern`; its
    first group, or None when `timeout` passes first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = up.stdout.readline()
        assert line, "speechops up exited:\n" + "".join(lines)
        lines.append(line)
        if m := re.search(pattern, line):
            return m.group(1)
    return None


def test_up_serves_a_pipeline_until_sigterm_and_stream_prints_its_results(tmp_path):
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text("apiVersion: speechops.dev/v1alpha1\nkind: SpeechPipeline\nmetadata: {name: levels}\n"
                        "spec:\n  stages:\n  - {name: vad, model: silero_vad}\n"
                        "  - {name: stats, model: audio_stats, dependsOn: [vad]}\n")
    up = subprocess.Popen([sys.executable, "-m", "speechops.cli", "up", str(pipeline), "--port", "0",
                           "--admin-port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    lines: list[str] = []
    try:
        url = ready(up, r"gateway ready: (ws://\S+)", lines)
        assert any("triton ready" in line for line in lines), lines   # start-up progress is shown
        result = speechops("stream", str(SAMPLE_WAV), "--url", url, "--fast")
        assert result.returncode == 0, result.stderr
        assert re.search(r"stats .*rms_dbfs=-\d+", result.stdout), result.stdout
        assert "utterance(s)" in result.stdout and "final latency" in result.stdout
        up.send_signal(signal.SIGTERM)
        rest, _ = up.communicate(timeout=60)
        assert up.returncode == 0, rest
        assert "draining" in rest and "stopped" in rest
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()


@pytest.mark.triton
def test_demo_prints_a_live_transcript_of_the_sample_and_exits_0():
    result = speechops("demo", "--fast", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    transcript = re.search(r"^transcript: (.*)$", result.stdout, re.M).group(1)
    assert word_error_rate(Path(SAMPLE_TEXT).read_text(), transcript) <= 0.15, result.stdout
    assert "final " in result.stdout and "triton ready" in result.stdout


@pytest.mark.triton
def test_up_with_api_keys_and_tls_and_stream_over_both_protocols(tmp_path):
    from tests.worker.tlskit import make_cert
    cert, key = make_cert(tmp_path / "tls", "speechops-local")
    keys = tmp_path / "keys"
    keys.write_text("sk-local-1\n")
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text("apiVersion: speechops.dev/v1alpha1\nkind: SpeechPipeline\nmetadata: {name: asr}\n"
                        "spec:\n  stages:\n  - {name: vad, model: silero_vad}\n"
                        "  - {name: asr, model: whisper_asr, dependsOn: [vad]}\n")
    up = subprocess.Popen([sys.executable, "-m", "speechops.cli", "up", str(pipeline), "--port", "0",
                           "--admin-port", "0", "--api-key-file", str(keys), "--tls-cert", str(cert),
                           "--tls-key", str(key)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    lines: list[str] = []
    try:
        port = ready(up, r"gateway ready: wss://[\d.]+:(\d+)/v1/stream", lines)
        assert port and "1 API keys" in "".join(lines)
        assert "sk-local-1" not in "".join(lines)
        reference = Path(SAMPLE_TEXT).read_text()
        env_key = dict(ENV, SPEECHOPS_API_KEY="sk-local-1")
        native = speechops("stream", str(SAMPLE_WAV), "--url", f"wss://localhost:{port}/v1/stream", "--fast",
                           "--ca", str(cert), env=env_key)
        assert native.returncode == 0, native.stdout + native.stderr
        finals = " ".join(re.findall(r"final   \[.*?\] (.*?)   \(", native.stdout))
        assert word_error_rate(reference, finals) <= 0.2, native.stdout
        realtime = speechops("stream", str(SAMPLE_WAV), "--protocol", "realtime", "--format", "pcmu", "--url",
                             f"wss://localhost:{port}/v1", "--fast", "--ca", str(cert), env=env_key)
        assert realtime.returncode == 0, realtime.stdout + realtime.stderr
        assert "turn(s)" in realtime.stdout and "final   item_" in realtime.stdout
        wrong = speechops("stream", str(SAMPLE_WAV), "--protocol", "realtime", "--url", f"wss://localhost:{port}/v1",
                          "--fast", "--ca", str(cert), "--api-key", "sk-wrong")
        assert wrong.returncode == 1 and "invalid_api_key" in wrong.stdout, wrong.stdout + wrong.stderr
        up.send_signal(signal.SIGTERM)
        rest, _ = up.communicate(timeout=60)
        assert up.returncode == 0, rest
        assert "sk-local-1" not in rest and "sk-wrong" not in rest
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()


def test_stream_needs_only_the_light_client_extra():
    """`pip install 'speechops[client]'` is enough for `speechops stream`, both protocols:
    no torch, Triton client, kopf or Kubernetes client is imported."""
    code = ("import sys\n"
            "for m in ('torch', 'tritonclient', 'ctranslate2', 'silero_vad', 'kopf', 'kubernetes', 'aiohttp'):\n"
            "    sys.modules[m] = None\n"
            "import speechops_worker.client, speechops_worker.realtime_client\n"
            "from speechops import cli\n"
            "sys.exit(cli.main(['stream', '--help']))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--protocol {native,realtime}" in result.stdout
