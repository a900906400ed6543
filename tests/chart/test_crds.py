"""The chart installs the very CRD the operator is built against: one file, no copy."""

from __future__ import annotations

import os
import tarfile

from chartkit import CHART, REPO, helm


def test_chart_crd_is_a_link_to_the_repository_crd():
    link = CHART / "crds" / "speechpipeline.yaml"
    assert link.is_symlink(), "charts/speechops/crds/speechpipeline.yaml must link to crds/speechpipeline.yaml"
    assert link.resolve() == (REPO / "crds" / "speechpipeline.yaml").resolve()
    assert os.readlink(link) == "../../../crds/speechpipeline.yaml"


def test_packaged_chart_carries_the_crd_byte_for_byte(tmp_path):
    # `helm package` follows the link; the archive users install must hold the same bytes.
    archive = helm.package(str(CHART), destination=str(tmp_path))
    with tarfile.open(archive) as tar:
        packed = tar.extractfile("speechops/crds/speechpipeline.yaml").read()
    assert packed == (REPO / "crds" / "speechpipeline.yaml").read_bytes()


def test_loaded_chart_crd_equals_the_repository_crd():
    with helm.Chart.load(str(CHART)) as chart:
        crds = {c["name"]: c["data"] for c in chart.crds}
    assert crds["crds/speechpipeline.yaml"] == (REPO / "crds" / "speechpipeline.yaml").read_text()
