"""Every value is documented where it is defined: a user never reads templates."""

from __future__ import annotations

import re

import yaml

from chartkit import CHART

VALUES = CHART / "values.yaml"
KEY = re.compile(r"^(\s*)([A-Za-z][\w]*):(.*)$")


def undocumented_values(text: str) -> list[str]:
    """Keys holding a value (not a section of further keys) with no comment directly
    above them or above one of their parent sections."""
    lines = text.splitlines()
    stack: list[tuple[int, str, bool]] = []
    missing = []
    for i, line in enumerate(lines):
        match = KEY.match(line)
        if not match:
            continue
        indent, key, rest = len(match.group(1)), match.group(2), match.group(3).strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        commented = i > 0 and lines[i - 1].strip().startswith("#")
        nxt = next((l for l in lines[i + 1:] if l.strip() and not l.strip().startswith("#")), "")
        is_section = not rest and len(nxt) - len(nxt.lstrip()) > indent and KEY.match(nxt)
        if not is_section and not commented and not any(c for _, _, c in stack):
            missing.append(".".join([k for _, k, _ in stack] + [key]))
        stack.append((indent, key, commented))
    return missing


def test_every_value_has_a_comment():
    assert undocumented_values(VALUES.read_text()) == []


def test_the_check_notices_an_undocumented_value():
    assert undocumented_values("a:\n  # -- documented\n  b: 1\n  c: 2\n") == ["a.c"]


def test_values_file_parses_and_schema_covers_every_top_level_key():
    import json
    values = yaml.safe_load(VALUES.read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert set(values) <= set(schema["properties"])
