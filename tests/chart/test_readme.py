"""README's reference sections are generated; they must match their sources."""

from __future__ import annotations

import subprocess
import sys

from chartkit import REPO

SCRIPT = REPO / "scripts" / "crd_reference.py"


def _crd_reference():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import crd_reference
    finally:
        sys.path.pop(0)
    return crd_reference


def test_readme_reference_sections_are_up_to_date():
    result = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_crd_reference_lists_every_spec_field_of_the_crd():
    ref = _crd_reference()
    text = ref.crd_reference()
    for path in ("spec.profile", "spec.stages[].dependsOn", "spec.worker.gpusPerPod",
                 "spec.capacity.maxReplicas", "spec.scaling.leadTime", "spec.reserve.mode", "status.conditions"):
        assert f"| `{path}` |" in text, path
    assert "rule: minReplicas must be <= maxReplicas" in text


def test_check_mode_notices_a_stale_readme(tmp_path, monkeypatch):
    ref = _crd_reference()
    stale = tmp_path / "README.md"
    stale.write_text((REPO / "README.md").read_text().replace("| `spec.profile` |", "| `spec.profil` |"))
    monkeypatch.setattr(ref, "README", stale)
    assert ref.main(["--check"]) == 1
    assert ref.main([]) == 0 and ref.main(["--check"]) == 0
    assert stale.read_text() == (REPO / "README.md").read_text()
