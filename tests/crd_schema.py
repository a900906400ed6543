"""The CRD's openAPIV3Schema as tests use it: structural defaulting (as the API server
applies it) and validation with jsonschema. CEL rules need a CEL engine; the tests pin
them by their messages and check that api.parse_spec enforces the same rules."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO = Path(__file__).resolve().parent.parent
CRD_PATH = REPO / "crds" / "speechpipeline.yaml"


def load_crd() -> dict[str, Any]:
    return yaml.safe_load(CRD_PATH.read_text())


def load_pipeline(path: Path) -> dict[str, Any]:
    """The SpeechPipeline document of a manifest file (an example may also hold its Namespace)."""
    (doc,) = [d for d in yaml.safe_load_all(Path(path).read_text()) if d and d.get("kind") == "SpeechPipeline"]
    return doc


def root_schema(crd: dict[str, Any] | None = None) -> dict[str, Any]:
    crd = crd or load_crd()
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def apply_defaults(value: Any, schema: dict[str, Any]) -> Any:
    """Fills absent fields with their schema defaults, recursively, including inside
    defaulted objects (what the API server does on create and on read)."""
    if isinstance(value, dict) and schema.get("type") == "object":
        out = dict(value)
        for key, sub in schema.get("properties", {}).items():
            if key not in out and "default" in sub:
                out[key] = copy.deepcopy(sub["default"])
            if key in out:
                out[key] = apply_defaults(out[key], sub)
        return out
    if isinstance(value, list) and "items" in schema:
        return [apply_defaults(v, schema["items"]) for v in value]
    return value


def validate(obj: dict[str, Any], schema: dict[str, Any] | None = None) -> list[str]:
    """Schema violations as 'path: message' strings (empty when valid)."""
    schema = schema or root_schema()
    # OpenAPI v3.0 (boolean exclusiveMinimum) is closest to JSON Schema draft 4.
    validator = jsonschema.Draft4Validator(schema)
    return sorted(
        f"{'.'.join(str(p) for p in err.absolute_path) or '<root>'}: {err.message}"
        for err in validator.iter_errors(obj)
    )


def prune(obj: Any, schema: dict[str, Any]) -> Any:
    """`obj` as a structural schema leaves it on write: fields the schema does not declare
    are dropped, except under x-kubernetes-preserve-unknown-fields (the API server's pruning)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return obj
    if isinstance(obj, dict):
        props = schema.get("properties", {})
        return {key: prune(value, props[key]) for key, value in obj.items() if key in props}
    if isinstance(obj, list) and "items" in schema:
        return [prune(value, schema["items"]) for value in obj]
    return obj
