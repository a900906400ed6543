#!/usr/bin/env python3
"""Writes README.md's reference sections from their sources of truth:

- "SpeechPipeline reference" from crds/speechpipeline.yaml (every field of spec and
  status: type, default, allowed values, description, and the CEL rules);
- "Metrics reference" from contract/speechops_contract/names.py (every M_* constant and the
  comment beside it).

Each section lives between `<!-- BEGIN name -->` and `<!-- END name -->` markers; the
text outside them is left alone. tests/chart/test_readme.py fails when README is stale.

    python scripts/crd_reference.py            # rewrite README.md
    python scripts/crd_reference.py --check    # exit 1 if README.md is out of date
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, Iterator

import yaml

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
CRD = REPO / "crds" / "speechpipeline.yaml"
NAMES = REPO / "contract" / "speechops_contract" / "names.py"


def _type(node: dict[str, Any]) -> str:
    if node.get("x-kubernetes-int-or-string"):
        return "int or string"
    kind = node.get("type", "object" if "properties" in node else "any")
    if kind == "array":
        return f"[]{_type(node.get('items', {}))}"
    if kind == "object" and isinstance(node.get("additionalProperties"), dict):
        return f"map[string]{_type(node['additionalProperties'])}"
    return kind


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _default(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(", ", ": "))


def _constraints(node: dict[str, Any]) -> str:
    parts = []
    if "enum" in node:
        parts.append("one of " + ", ".join(f"`{v}`" for v in node["enum"]))
    for key, word in (("minimum", "≥"), ("maximum", "≤"), ("minItems", "items ≥"), ("maxItems", "items ≤"),
                      ("minLength", "length ≥"), ("maxLength", "length ≤")):
        if key in node:
            parts.append(f"{word} {node[key]}")
    if "pattern" in node:
        parts.append(f"pattern `{node['pattern']}`")
    for rule in node.get("x-kubernetes-validations", []):
        parts.append(f"rule: {rule['message']}")
    return "; ".join(parts)


def _fields(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for key, sub in node.get("properties", {}).items():
        here = f"{path}.{key}"
        yield here, sub
        yield from _fields(sub, here)
        items = sub.get("items")
        if isinstance(items, dict) and "properties" in items:
            yield from _fields(items, f"{here}[]")
        extra = sub.get("additionalProperties")
        if isinstance(extra, dict) and "properties" in extra:
            yield from _fields(extra, f"{here}{{}}")


def crd_reference() -> str:
    crd = yaml.safe_load(CRD.read_text())
    version = crd["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    names = crd["spec"]["names"]
    lines = [
        f"`apiVersion: {crd['spec']['group']}/{version['name']}`, `kind: {names['kind']}` "
        f"(short name `{', '.join(names.get('shortNames', []))}`), namespaced. "
        f"Generated from `crds/speechpipeline.yaml` by `scripts/crd_reference.py`.",
        "",
    ]
    for top in ("spec", "status"):
        node = schema["properties"][top]
        lines += [f"#### `{top}`", "", _cell(node.get("description", "")), ""]
        if top == "spec" and node.get("x-kubernetes-validations"):
            lines += [f"Rule: {_cell(r['message'])}" for r in node["x-kubernetes-validations"]] + [""]
        lines += ["| field | type | default | constraints | description |", "|---|---|---|---|---|"]
        for path, sub in _fields(node, top):
            default = f"`{_default(sub['default'])}`" if "default" in sub else ""
            lines.append(f"| `{path}` | {_type(sub)} | {_cell(default)} | {_cell(_constraints(sub))} | "
                         f"{_cell(sub.get('description', ''))} |")
        lines.append("")
    columns = version.get("additionalPrinterColumns", [])
    if columns:
        def column(c: dict) -> str:
            return f"**{c['name']}**" + (f" ({_cell(c['description'])})" if c.get("description") else "")
        lines += ["`kubectl get sp` shows: " + ", ".join(column(c) for c in columns if not c.get("priority"))
                  + "."]
        wide = [column(c) for c in columns if c.get("priority")]
        if wide:
            lines[-1] += " `-o wide` adds " + ", ".join(wide) + "."
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


_METRIC = re.compile(r'^(M_\w+)\s*=\s*"([^"]+)"\s*(?:#\s*(.*))?$')


def metrics_reference() -> str:
    lines = ["Generated from `contract/speechops_contract/names.py` by `scripts/crd_reference.py`. Gateway "
             "metrics are served by every worker pod on port 9400 (`/metrics`), operator metrics "
             "on the operator's metrics port (9300); gateway and scaler series carry `namespace` and "
             "`pipeline`.",
             "", "| metric | type, labels and meaning | exported by |", "|---|---|---|"]
    for line in NAMES.read_text().splitlines():
        match = _METRIC.match(line.strip())
        if match:
            const, metric, comment = match.groups()
            source = "operator" if metric.startswith("speechops_operator_") else "gateway"
            lines.append(f"| `{metric}` | {_cell(comment or '')} | {source} |")
    lines.append("")
    lines.append("Triton's own metrics (`nv_inference_*`, `nv_gpu_*`) are scraped from port 8002 of the "
                 "same pods.")
    return "\n".join(lines) + "\n"


SECTIONS = {"crd-reference": crd_reference, "metrics-reference": metrics_reference}


def render(readme: str) -> str:
    for name, build in SECTIONS.items():
        begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
        if begin not in readme or end not in readme:
            raise SystemExit(f"README.md lacks the markers {begin} ... {end}")
        head, rest = readme.split(begin, 1)
        _, tail = rest.split(end, 1)
        readme = f"{head}{begin}\n{build()}{end}{tail}"
    return readme


def main(argv: list[str]) -> int:
    current = README.read_text()
    wanted = render(current)
    if argv == ["--check"]:
        if current != wanted:
            print("README.md reference sections are stale: run python scripts/crd_reference.py",
                  file=sys.stderr)
            return 1
        return 0
    README.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
