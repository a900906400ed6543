"""The gateway container's entry point: `python -m speechops_worker.gateway`.

Reads one or more SpeechPipeline documents (a YAML file, `---`-separated) or, in a worker
pod, the one pipeline the operator describes in the environment (PIPELINE, PIPELINE_SPEC,
NAMESPACE, TRITON_GRPC_URL; see `speechops.resources.worker`), connects to
Triton's gRPC port and serves streams until SIGTERM, which drains open streams first
(stop admitting, finish streams up to drainTimeout, then close them with their results).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import logging
import signal
import sys
from pathlib import Path

import yaml

from speechops_contract import logs, names
from speechops_worker.gateway.server import Gateway, GatewayConfig
from speechops_worker.gateway.tls import paths_in as tls_paths_in


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m speechops_worker.gateway")
    parser.add_argument("--pipelines", type=Path,
                        help="YAML file with SpeechPipeline documents (default: the pipeline in $PIPELINE_SPEC)")
    parser.add_argument("--triton", default=os.environ.get(names.ENV_TRITON_GRPC_URL, f"127.0.0.1:{names.TRITON_GRPC_PORT}"),
                        help="Triton gRPC host:port")
    parser.add_argument("--host", default=None,
                        help="address to listen on (default: every interface, IPv4 and IPv6, so single-stack IPv6 and dual-stack clusters reach the pod)")
    parser.add_argument("--port", type=int, default=names.GATEWAY_PORT)
    parser.add_argument("--admin-port", type=int, default=names.GATEWAY_ADMIN_PORT)
    parser.add_argument("--max-streams", type=int, help="per pipeline (default: spec.capacity.streamsPerReplica)")
    parser.add_argument("--no-load-admission", action="store_true",
                        help="admit up to the hard cap whatever the load (benchmarks measuring the frontier)")
    parser.add_argument("--api-keys", default=os.environ.get(names.ENV_API_KEYS),
                        help=f"file or directory of API keys, one a line (default ${names.ENV_API_KEYS}; none: "
                             "streams need no key)")
    parser.add_argument("--tls-dir", default=os.environ.get(names.ENV_TLS_DIR),
                        help=f"directory with tls.crt and tls.key: serve wss:// (default ${names.ENV_TLS_DIR})")
    parser.add_argument("--admin-public-keys", default=os.environ.get(names.ENV_ADMIN_PUBLIC_KEYS),
                        help=f"file of the operator's PEM public keys: POST /drain and /undrain over TCP need its "
                             f"signature (default ${names.ENV_ADMIN_PUBLIC_KEYS}; none: only from this machine)")
    parser.add_argument("--admin-socket", default=os.environ.get(names.ENV_ADMIN_SOCKET),
                        help=f"also serve the admin endpoints on this Unix socket, unauthenticated: for the pod's "
                             f"own preStop hook (default ${names.ENV_ADMIN_SOCKET})")
    parser.add_argument("--log-format", choices=("human", "json"), default="human")
    args = parser.parse_args(argv)
    logs.configure(args.log_format)

    from speechops_worker.local import UpError, pipeline_from_doc
    try:
        if args.pipelines is not None:
            docs = [d for d in yaml.safe_load_all(args.pipelines.read_text()) if d]
            source = str(args.pipelines)
        else:
            docs, source = [pipeline_from_environment(os.environ)], f"${names.ENV_PIPELINE_SPEC}"
        pipelines = dict(pipeline_from_doc(d, source) for d in docs)
    except (OSError, yaml.YAMLError, json.JSONDecodeError, UpError) as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    cert, key = tls_paths_in(args.tls_dir) if args.tls_dir else (None, None)
    config = GatewayConfig(triton_url=args.triton, pipelines=pipelines, host=args.host, port=args.port,
                           admin_port=args.admin_port, max_streams=args.max_streams,
                           load_admission=not args.no_load_admission, api_keys=args.api_keys,
                           tls_cert=cert and str(cert), tls_key=key and str(key),
                           admin_public_keys=args.admin_public_keys, admin_socket=args.admin_socket)
    try:
        gateway = Gateway(config)     # keys and certificate are read here: a bad one stops the start
    except ValueError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2

    async def serve() -> None:
        await gateway.start()
        print(f"gateway ready port={gateway.port} admin_port={gateway.admin_port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await gateway.drain()
        await gateway.stop()

    try:
        import uvloop
        uvloop.run(serve())
    except ImportError:
        asyncio.run(serve())
    logging.getLogger("speechops.gateway").info("stopped")
    return 0


def pipeline_from_environment(env: os._Environ | dict) -> dict:
    """The SpeechPipeline document a worker pod's environment describes."""
    from speechops_contract.api import API_VERSION, KIND
    from speechops_worker.local import UpError
    if names.ENV_PIPELINE not in env or names.ENV_PIPELINE_SPEC not in env:
        raise UpError(f"give --pipelines FILE, or set {names.ENV_PIPELINE} and {names.ENV_PIPELINE_SPEC}")
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": env[names.ENV_PIPELINE]},
            "spec": json.loads(env[names.ENV_PIPELINE_SPEC])}


if __name__ == "__main__":
    sys.exit(main())
