"""The generated references (docs/reference/crd.md, docs/reference/metrics.md, the chart
README's values table) must match their sources; the docs must not point at files that are
not in the repository."""

from __future__ import annotations

import re
import subprocess
import sys

import yaml

from chartkit import CHART, REPO

SCRIPT = REPO / "scripts" / "crd_reference.py"


def _crd_reference():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import crd_reference
    finally:
        sys.path.pop(0)
    return crd_reference


def test_generated_references_are_up_to_date():
    result = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_crd_reference_lists_every_spec_field_of_the_crd():
    ref = _crd_reference()
    text = ref.crd_reference()
    for path in ("spec.profile", "spec.stages[].dependsOn", "spec.worker.gpusPerPod",
                 "spec.capacity.maxReplicas", "spec.scaling.leadTime", "spec.reserve.mode", "status.conditions"):
        assert f"| `{path}` |" in text, path
    assert "rule: minReplicas must be <= maxReplicas" in text


def test_values_reference_covers_every_value_with_its_default():
    ref = _crd_reference()
    text = ref.values_reference()
    rows = dict(re.findall(r"^\| `([^`]+)` \| `(.*?)` \|", text, re.M))
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def leaves(node, path=()):
        if isinstance(node, dict) and node:
            for key, sub in node.items():
                yield from leaves(sub, path + (key,))
        else:
            yield ".".join(path)

    for leaf in leaves(values):
        # A row for the value itself, or for a documented mapping that holds it.
        owner = next((p for p in rows if leaf == p or leaf.startswith(p + ".")), None)
        assert owner, f"{leaf} has no row in the chart README"
    assert rows["operator.replicas"] == "2" and rows["workers.gpu"] == "true"
    assert rows["monitoring.prometheusRule.for"] == '"5m"'


def test_check_mode_notices_a_stale_reference(tmp_path, monkeypatch):
    ref = _crd_reference()
    source = REPO / "docs" / "reference" / "crd.md"
    stale = tmp_path / "crd.md"
    stale.write_text(source.read_text().replace("| `spec.profile` |", "| `spec.profil` |"))
    monkeypatch.setattr(ref, "REPO", tmp_path)
    monkeypatch.setattr(ref, "TARGETS", {stale: {"crd-reference": ref.crd_reference}})
    assert ref.main(["--check"]) == 1
    assert ref.main([]) == 0 and ref.main(["--check"]) == 0
    assert stale.read_text() == source.read_text()


_LINK = re.compile(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)")


def _anchors(page) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.+)$", text, re.M)}


def test_relative_links_in_the_docs_resolve_inside_the_repository():
    pages = [REPO / "README.md", CHART / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    broken = []
    for page in pages:
        prose = re.sub(r"`[^`\n]*`", "", re.sub(r"```.*?```", "", page.read_text(), flags=re.S))
        for target, anchor in _LINK.findall(prose):
            if re.match(r"[a-z]+:", target):
                continue
            resolved = (page.parent / target).resolve() if target else page
            if not resolved.is_relative_to(REPO) or not resolved.exists():
                broken.append(f"{page.relative_to(REPO)} -> {target}")
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
                broken.append(f"{page.relative_to(REPO)} -> {target}#{anchor}")
    assert broken == []


def test_nothing_outside_tests_and_benchmarks_points_outside_the_repository():
    """Only tests, benchmarks and .ci may read the machine's shared folder (traces, envtest)."""
    roots = ["contract", "operator", "worker", "charts", "crds", "docs", "examples", "images", "scripts"]
    files = [REPO / "README.md", REPO / "kind-config.yaml", REPO / "pyproject.toml"]
    files += [f for root in roots for f in (REPO / root).rglob("*")
              if f.is_file() and f.suffix in {".py", ".md", ".yaml", ".yml", ".txt", ".tpl", ".json", ".sh", ".pbtxt", ".Dockerfile", ""}
              and "__pycache__" not in f.parts]
    offenders = [str(f.relative_to(REPO)) for f in files
                 if f.exists() and any(s in f.read_text(errors="replace") for s in ("../shared", "DESIGN.md"))]
    assert offenders == []


def test_speechpipeline_examples_in_the_docs_are_valid():
    from speechops_contract import api

    pages = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    checked = 0
    for page in pages:
        for block in re.findall(r"```yaml\n(.*?)```", page.read_text(), re.S):
            doc = yaml.safe_load(block)
            if isinstance(doc, dict) and doc.get("kind") == "SpeechPipeline":
                api.parse_spec(doc["spec"])  # raises SpecError naming the field
                checked += 1
    assert checked >= 1
