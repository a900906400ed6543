#!/usr/bin/env python3
"""Writes the generated reference docs from their sources of truth:

- docs/reference/crd.md from crds/speechpipeline.yaml (every field of spec and status:
  type, default, allowed values, description, and the CEL rules);
- docs/reference/metrics.md from contract/speechops_contract/names.py (every M_* constant
  and the comment beside it);
- the values table of charts/speechops/README.md from charts/speechops/values.yaml (every
  value, its default and the `# --` comment above it).

Each section lives between `<!-- BEGIN name -->` and `<!-- END name -->` markers; the
text outside them is left alone. tests/chart/test_readme.py fails when one is stale.

    python scripts/crd_reference.py            # rewrite them
    python scripts/crd_reference.py --check    # exit 1 if one is out of date
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, Iterator

import yaml

REPO = Path(__file__).resolve().parent.parent
CRD = REPO / "crds" / "speechpipeline.yaml"
NAMES = REPO / "contract" / "speechops_contract" / "names.py"
VALUES = REPO / "charts" / "speechops" / "values.yaml"


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


_VALUE_KEY = re.compile(r"^(\s*)([A-Za-z]\w*):(.*)$")


def values_reference() -> str:
    """One row per documented value: a key with a `# --` comment block above it. A
    commented key whose value is a mapping (resources, probes) is one row with the whole
    mapping as its default; an uncommented section is walked into."""
    text = VALUES.read_text()
    values = yaml.safe_load(text)
    lines = ["Generated from `values.yaml` by `scripts/crd_reference.py`.", "",
             "| value | default | description |", "|---|---|---|"]
    stack: list[tuple[int, str]] = []
    comment: list[str] = []
    documented_above = -1
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            body = stripped.lstrip("#").strip()
            if body.startswith("--"):
                comment = [body[2:].strip()]
            elif comment:
                comment.append(body)
            continue
        match = _VALUE_KEY.match(line)
        if not match:
            if stripped:
                comment = []
            continue
        indent, key = len(match.group(1)), match.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if documented_above >= 0 and indent <= documented_above:
            documented_above = -1
        path = [k for _, k in stack] + [key]
        stack.append((indent, key))
        if comment and documented_above < 0:
            value = values
            for k in path:
                value = value[k]
            default = json.dumps(value, separators=(", ", ": ")) if not isinstance(value, str) else json.dumps(value)
            lines.append(f"| `{'.'.join(path)}` | `{_cell(default)}` | {_cell(' '.join(comment))} |")
            documented_above = indent
        comment = []
    return "\n".join(lines) + "\n"


# file -> the generated sections in it
TARGETS: dict[Path, dict[str, Any]] = {
    REPO / "docs" / "reference" / "crd.md": {"crd-reference": crd_reference},
    REPO / "docs" / "reference" / "metrics.md": {"metrics-reference": metrics_reference},
    REPO / "charts" / "speechops" / "README.md": {"values-reference": values_reference},
}


def render(text: str, sections: dict[str, Any], where: str = "the file") -> str:
    for name, build in sections.items():
        begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
        if begin not in text or end not in text:
            raise SystemExit(f"{where} lacks the markers {begin} ... {end}")
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = f"{head}{begin}\n{build()}{end}{tail}"
    return text


def main(argv: list[str]) -> int:
    stale = []
    for path, sections in TARGETS.items():
        current = path.read_text()
        wanted = render(current, sections, str(path.relative_to(REPO)))
        if current == wanted:
            continue
        if argv == ["--check"]:
            stale.append(str(path.relative_to(REPO)))
        else:
            path.write_text(wanted)
    if stale:
        print(f"stale generated reference: {', '.join(stale)}: run python scripts/crd_reference.py",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
