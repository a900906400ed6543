"""`speechops run`: the operator process (kopf with our handler modules)."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

import kopf
from prometheus_client import start_http_server

from speechops_contract import logs
from speechops import admin_signing

# Handler modules kopf loads. The scaler's timer joins here.
HANDLER_MODULES = ("speechops.handlers", "speechops.scaling.handlers")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="speechops run", description="Run the speechops operator.")
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", default=[],
                       help="watch only this namespace (repeatable; globs allowed)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace (default)")
    parser.add_argument("--peering", metavar="NAME",
                        help="coordinate with other replicas through this KopfPeering object, so only one acts "
                             "(high availability); without it the operator runs standalone")
    parser.add_argument("--priority", type=int, default=0,
                        help="peering priority: the highest-priority replica acts, the others wait")
    parser.add_argument("--liveness", metavar="URL", default=None,
                        help="serve kopf's liveness probe, e.g. http://0.0.0.0:8080/healthz")
    parser.add_argument("--metrics-port", type=int, default=None,
                        help="serve Prometheus metrics (reconciles, errors, durations) on this port")
    parser.add_argument("--log-format", choices=("human", "json"), default="human")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    logs.configure(args.log_format, logging.DEBUG if args.verbose else logging.INFO)
    try:
        admin_signing.process_signer()   # a key file that is set but unusable stops the start here
    except admin_signing.AdminKeyError as exc:
        print(f"speechops run: {exc}", file=sys.stderr)
        return 2
    for module in HANDLER_MODULES:
        importlib.import_module(module)
    if args.metrics_port is not None:
        start_http_server(args.metrics_port)
    kopf.run(
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        standalone=args.peering is None,
        peering_name=args.peering,
        priority=args.priority,
        liveness_endpoint=args.liveness,
    )
    return 0
