"""`speechops plan FILE`: the manifests the operator would create for each
SpeechPipeline in FILE, as multi-document YAML (like `helm template`), or the
validation errors with their field paths (exit status 1).

Nothing is sent to a cluster. Owner references are left out: they need the uid the
API server assigns. The worker's replicas is the value it is created with; the
scaler owns it afterwards.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

import yaml

from speechops_contract import api
from speechops.resources.desired import desired_state


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    # Model configs and scripts read best as literal blocks.
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(manifests: list[dict[str, Any]]) -> str:
    parts = []
    for m in manifests:
        ns = m["metadata"].get("namespace")
        source = f"# Source: {m['kind']} {ns + '/' if ns else ''}{m['metadata']['name']}\n"
        parts.append("---\n" + source + yaml.dump(m, Dumper=_Dumper, sort_keys=False, width=120))
    return "".join(parts)


def plan_documents(docs: list[Any], default_namespace: str) -> tuple[list[dict[str, Any]], list[str]]:
    """(manifests, errors) for every SpeechPipeline document; errors name the document
    and the field."""
    manifests: list[dict[str, Any]] = []
    errors: list[str] = []
    classes: dict[str, dict[str, Any]] = {}
    for i, doc in enumerate(docs):
        if doc is None:
            continue
        where = f"document {i + 1}"
        if not isinstance(doc, dict):
            errors.append(f"{where}: expected a SpeechPipeline object, got {type(doc).__name__}")
            continue
        if doc.get("kind") == "Namespace" and doc.get("apiVersion") == "v1":
            continue   # a manifest that creates its own namespace (the examples do)
        if doc.get("kind") != api.KIND or doc.get("apiVersion") != api.API_VERSION:
            errors.append(f"{where}: kind/apiVersion must be {api.KIND}/{api.API_VERSION}, "
                          f"got {doc.get('kind')}/{doc.get('apiVersion')}")
            continue
        meta = doc.get("metadata") or {}
        name = meta.get("name")
        if not name:
            errors.append(f"{where}: metadata.name is required")
            continue
        where = f"{api.KIND} {name}"
        try:
            spec = api.parse_spec(doc.get("spec"))
        except api.SpecError as err:
            errors += [f"{where}: {path}: {msg}" for path, msg in err.problems]
            continue
        state = desired_state(name, meta.get("namespace") or default_namespace, spec)
        for pc in state.priority_classes:
            classes.setdefault(pc["metadata"]["name"], pc)
        manifests += state.children
    return list(classes.values()) + manifests, errors


def main(argv: list[str], out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    parser = argparse.ArgumentParser(prog="speechops plan", description=__doc__.split("\n\n")[0])
    parser.add_argument("file", help="YAML file with one or more SpeechPipelines ('-' for stdin)")
    parser.add_argument("-n", "--namespace", default="default",
                        help="namespace for pipelines that name none (default: default)")
    args = parser.parse_args(argv)
    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
        docs = list(yaml.safe_load_all(text))
    except (OSError, yaml.YAMLError) as exc:
        print(f"speechops plan: cannot read {args.file}: {exc}", file=err)
        return 1
    manifests, errors = plan_documents(docs, args.namespace)
    if errors:
        for line in errors:
            print(line, file=err)
        return 1
    if not manifests:
        print(f"speechops plan: no {api.KIND} in {args.file}", file=err)
        return 1
    out.write(to_yaml(manifests))
    return 0
