"""Image recipes: multi-stage, bases pinned by version, non-root. (CI has no Docker;
the images are built by users, README "Cluster quickstart".)"""

from __future__ import annotations

import re

import pytest
import yaml

from chartkit import REPO
from speechops_contract import names

DOCKERFILES = {"operator": REPO / "images" / "operator.Dockerfile", "worker": REPO / "images" / "worker.Dockerfile"}


def _instructions(path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
            for line in (l.strip() for l in text.splitlines()) if line and not line.startswith("#")]


def _base_images(path) -> list[str]:
    steps = _instructions(path)
    args = dict(re.match(r"(\w+)=(\S+)", v).groups() for k, v in steps if k == "ARG" and "=" in v)
    bases = []
    for key, value in steps:
        if key == "FROM":
            image = value.split()[0]
            bases.append(re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image))
    return bases


@pytest.mark.parametrize("name", DOCKERFILES)
def test_image_is_multi_stage_with_version_pinned_bases(name):
    bases = _base_images(DOCKERFILES[name])
    assert len(bases) >= 2, "build and runtime stages"
    for image in bases:
        tag = image.split("@")[0].rsplit(":", 1)
        assert len(tag) == 2 and re.search(r"\d+\.\d+", tag[1]), f"{image}: pin a version tag"
        assert "latest" not in tag[1]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_image_runs_as_a_numeric_non_root_user(name):
    users = [v for k, v in _instructions(DOCKERFILES[name]) if k == "USER"]
    assert users, "no USER: the image would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) > 0


def test_worker_image_ships_models_where_the_operator_copies_them_from():
    text = DOCKERFILES["worker"].read_text()
    assert names.WORKER_IMAGE_MODELS_PATH in text
    # Models find their deps under Triton's isolated stub: a .pth file in the stub's own
    # interpreter names the venv, and the build imports them with that interpreter.
    assert "speechops-worker.pth" in text and "/usr/bin/python3 -c \"import speechops_worker.asr" in text


def test_worker_image_uid_matches_the_worker_pods():
    from speechops.resources.meta import pod_security
    users = [v for k, v in _instructions(DOCKERFILES["worker"]) if k == "USER"]
    assert int(users[-1].split(":")[0]) == pod_security()["runAsUser"]


def test_kind_config_is_a_kind_cluster_with_gpu_notes():
    text = (REPO / "kind-config.yaml").read_text()
    config = yaml.safe_load(text)
    assert config["kind"] == "Cluster" and config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert [n["role"] for n in config["nodes"]].count("worker") >= 2
    assert "nvidia.com/gpu" in text and "workers.gpu=false" in text
