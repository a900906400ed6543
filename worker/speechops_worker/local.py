"""`speechops up` and `speechops demo`: a whole worker on this machine, no cluster.

`up` starts the real tritonserver (model repository built from this package, configs by
the operator's builder), then the gateway and its admin endpoint, and serves until
Ctrl-C or SIGTERM, which drains open streams first. `demo` does the same on free ports
with the built-in pipeline, streams the sample utterance the package ships, prints the
live transcript, and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import yaml

from speechops_contract import names
from speechops_contract.api import KIND, PipelineSpec, SpecError, parse_spec
from speechops_worker.gateway.pipeline import MODEL_KINDS
from speechops_worker.gateway.pipeline import plan as plan_pipeline

DATA = Path(__file__).resolve().parent / "data"
SAMPLE_WAV = DATA / "sample.wav"
SAMPLE_TEXT = DATA / "sample.txt"

# The demo's pipeline: VAD, then ASR and audio analytics side by side.
DEMO_PIPELINE: dict[str, Any] = {
    "apiVersion": "speechops.dev/v1alpha1", "kind": KIND, "metadata": {"name": "demo"},
    "spec": {
        "profile": "interactive",
        "stages": [
            {"name": "vad", "model": "silero_vad"},
            {"name": "asr", "model": "whisper_asr", "dependsOn": ["vad"], "fallbackModel": "whisper_asr_greedy"},
            {"name": "stats", "model": "audio_stats", "dependsOn": ["vad"], "optional": True},
        ],
    },
}


class UpError(RuntimeError):
    pass


def load_pipeline(path: str | Path) -> tuple[str, PipelineSpec]:
    """A SpeechPipeline YAML file -> (name, spec); every problem in one clear message."""
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise UpError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise UpError(f"{path} is not valid YAML: {exc}") from None
    return pipeline_from_doc(doc, str(path))


def pipeline_from_doc(doc: Any, source: str = "pipeline") -> tuple[str, PipelineSpec]:
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        raise UpError(f"{source}: expected a {KIND} resource (kind: {KIND}, metadata.name, spec)")
    name = (doc.get("metadata") or {}).get("name")
    if not isinstance(name, str) or not name:
        raise UpError(f"{source}: metadata.name is required")
    try:
        spec = parse_spec(doc.get("spec"))
        plan_pipeline(name, spec)
    except SpecError as exc:
        problems = list(exc.problems)
        raw_stages = (doc.get("spec") or {}).get("stages")
        if isinstance(raw_stages, list):       # also name models the gateway cannot serve
            for i, stage in enumerate(raw_stages):
                model = stage.get("model") if isinstance(stage, dict) else None
                path = f"spec.stages[{i}].model"
                if isinstance(model, str) and model not in MODEL_KINDS and path not in dict(problems):
                    problems.append((path, f"the gateway cannot serve {model!r}; known: {', '.join(sorted(MODEL_KINDS))}"))
        lines = "\n".join(f"  {field}: {msg}" for field, msg in problems)
        raise UpError(f"{source}: invalid spec:\n{lines}") from None
    return name, spec


def _progress(message: str) -> None:
    print(f"  {time.strftime('%H:%M:%S')} {message}", flush=True)


def local_parameters(spec: PipelineSpec) -> dict[str, dict[str, str]]:
    """config.pbtxt parameters per model, as the operator sets them. A Whisper model from
    a PVC or an image exists only in a cluster; here it must be a local `whisper.path`."""
    from speechops_contract.model_config import pipeline_parameters
    for i, stage in enumerate(spec.stages):
        if stage.whisper is not None and (stage.whisper.pvc_claim_name or stage.whisper.image):
            raise UpError(f"spec.stages[{i}].whisper: pvc and image sources need a cluster; "
                          "for speechops up set whisper.path to a local CTranslate2 Whisper directory")
    return pipeline_parameters(spec.stages)


@contextmanager
def local_triton(name: str, spec: PipelineSpec, progress=_progress) -> Iterator[Any]:
    """The real tritonserver with the models this pipeline needs, on free ports."""
    from speechops_worker.triton import TritonServer, build_model_repository  # loads nothing heavy

    models = sorted(plan_pipeline(name, spec).models)
    with tempfile.TemporaryDirectory(prefix="speechops-models-") as tmp:
        progress(f"model repository: {', '.join(models)} (profile {spec.profile})")
        # The pipeline's own model parameters: its Whisper model, language and task.
        repo = build_model_repository(tmp, models, idle_timeout_s=spec.streams.idle_timeout,
                                      parameters=local_parameters(spec))
        progress("starting tritonserver (loading models: Silero VAD, Whisper tiny.en) ...")
        with TritonServer(repo, on_progress=lambda m: progress(f"triton: {m}")) as triton:
            progress(f"triton ready in {triton.startup_s or 0:.1f}s, gRPC {triton.grpc_url}")
            yield triton


def _run(coro) -> Any:
    try:
        import uvloop
        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


async def _start_gateway(name: str, spec: PipelineSpec, triton_url: str, host: str, port: int, admin_port: int | None,
                         **security):
    """`security`: api_keys, tls_cert, tls_key (GatewayConfig's)."""
    from speechops_worker.gateway.server import Gateway, GatewayConfig

    try:
        gateway = Gateway(GatewayConfig(triton_url=triton_url, pipelines={name: spec}, host=host, port=port,
                                        admin_port=admin_port, **security))
    except ValueError as exc:       # unreadable keys, a certificate that does not match its key
        raise UpError(str(exc)) from None
    try:
        await gateway.start()
    except OSError as exc:
        raise UpError(f"cannot listen on {host}:{port} or :{admin_port}: {exc.strerror}; "
                      f"pick other ports with --port/--admin-port (0 = any free port)") from None
    return gateway


async def _serve(name: str, spec: PipelineSpec, triton_url: str, args) -> int:
    gateway = await _start_gateway(name, spec, triton_url, args.host, args.port, args.admin_port,
                                   api_keys=args.api_key_file, tls_cert=args.tls_cert, tls_key=args.tls_key)
    host = gateway.config.host
    scheme = "wss" if gateway.tls else "ws"
    _progress(f"gateway ready: {scheme}://{host}:{gateway.port}/v1/stream and /v1/realtime (pipeline {name!r}"
              f"{f', {len(gateway.keys)} API keys' if gateway.keys else ''})")
    _progress(f"metrics http://{host}:{gateway.admin_port}/metrics, health /healthz /readyz, "
              f"POST /drain /undrain (from this machine only)")
    extra = (" --api-key KEY" if gateway.keys else "") + (f" --ca {args.tls_cert}" if gateway.tls else "")
    print(f"\nstream a file:  speechops stream FILE.wav --url {scheme}://{host}:{gateway.port}/v1/stream{extra}\n"
          f"  or the OpenAI Realtime protocol: --protocol realtime --url {scheme}://{host}:{gateway.port}/v1\n"
          f"stop:           Ctrl-C (open streams are drained first)\n", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    _progress(f"draining {len(gateway.sessions)} open stream(s) (up to {spec.streams.drain_timeout:g}s) ...")
    await gateway.drain()
    await gateway.stop()
    _progress("stopped")
    return 0


def up_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="speechops up", description="Run a SpeechPipeline on this machine: "
                                     "the real tritonserver, the streaming gateway and its metrics endpoint.")
    parser.add_argument("pipeline", help="SpeechPipeline YAML file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=names.GATEWAY_PORT, help="WebSocket port (0: any free port)")
    parser.add_argument("--admin-port", type=int, default=names.GATEWAY_ADMIN_PORT, help="metrics/health port")
    parser.add_argument("--api-key-file", help="streams must present one of these keys (one a line); re-read "
                                               "when the file changes")
    parser.add_argument("--tls-cert", help="serve wss:// with this certificate (PEM); re-read when it changes")
    parser.add_argument("--tls-key", help="the certificate's private key (PEM)")
    args = parser.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    try:
        name, spec = load_pipeline(args.pipeline)
        print(f"speechops up: pipeline {name!r}, profile {spec.profile}, stages "
              f"{', '.join(s.name + '=' + s.model for s in spec.stages)}", flush=True)
        with local_triton(name, spec) as triton:
            return _run(_serve(name, spec, triton.grpc_url, args))
    except UpError as exc:
        print(f"speechops up: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # tritonserver failing to start carries its log tail
        if type(exc).__name__ == "TritonError":
            print(f"speechops up: {exc}", file=sys.stderr)
            return 1
        raise


async def _demo(name: str, spec: PipelineSpec, triton_url: str, wav: Path, realtime: bool) -> int:
    from speechops_worker.client import Printer, read_wav, stream_audio, summary
    from speechops_worker.gateway.transcript import word_error_rate

    gateway = await _start_gateway(name, spec, triton_url, "127.0.0.1", 0, None)
    url = f"ws://127.0.0.1:{gateway.port}/v1/stream"
    try:
        pcm = read_wav(wav)
        _progress(f"gateway ready at {url}")
        print(f"\nstreaming {wav.name} ({len(pcm) / 16000:.1f} s of speech{' in real time' if realtime else ''}):\n",
              flush=True)
        result = await stream_audio(url, pcm, realtime=realtime, on_event=Printer())
    finally:
        await gateway.stop()
    print(f"\ntranscript: {result.transcript}")
    if wav == SAMPLE_WAV:
        reference = SAMPLE_TEXT.read_text().strip()
        print(f"reference:  {reference}\nword error rate: {word_error_rate(reference, result.transcript):.2f}")
    print(summary(result))
    if result.error:
        print(f"speechops demo: the stream failed: {result.error['message']}", file=sys.stderr)
        return 1
    return 0 if result.transcript else 1


def demo_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="speechops demo", description="Start a local pipeline (tritonserver + "
                                     "gateway), stream a sample utterance, print the live transcript, exit.")
    parser.add_argument("--wav", type=Path, default=SAMPLE_WAV, help="16 kHz mono PCM16 WAV (default: the sample)")
    parser.add_argument("--fast", action="store_true", help="stream faster than real time")
    args = parser.parse_args(argv)
    name, spec = pipeline_from_doc(DEMO_PIPELINE, "built-in demo pipeline")
    print("speechops demo: Silero VAD -> Whisper tiny.en (+ audio stats) on a local tritonserver", flush=True)
    try:
        with local_triton(name, spec) as triton:
            return _run(_demo(name, spec, triton.grpc_url, args.wav, not args.fast))
    except UpError as exc:
        print(f"speechops demo: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if type(exc).__name__ == "TritonError":
            print(f"speechops demo: {exc}", file=sys.stderr)
            return 1
        raise
