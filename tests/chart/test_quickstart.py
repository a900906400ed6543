"""The README's kind quickstart hangs together: the names it builds, loads, installs
and applies are the names the chart, the example and the operator's builders use."""

from __future__ import annotations

import re
import tomllib

import yaml

from chartkit import CHART, REPO, manifests
from speechops_contract import api
from speechops.resources.desired import desired_state
from speechops.resources.worker import GPU_RESOURCE

README = (REPO / "README.md").read_text()
QUICKSTART = README.split("## Cluster quickstart", 1)[1].split("\n## ", 1)[0]
EXAMPLE = yaml.safe_load((REPO / "examples" / "pipeline-kind.yaml").read_text())


def _built_images() -> set[str]:
    return set(re.findall(r"docker build -f images/\S+\s+-t (\S+)", QUICKSTART))


def test_images_built_are_the_images_loaded_and_used():
    built = _built_images()
    assert built == {"speechops/operator:0.1.0", "speechops/worker:0.1.0"}
    loaded = re.search(r"kind load docker-image --name (\S+) (.+)", QUICKSTART)
    assert set(loaded.group(2).split()) == built
    assert loaded.group(1) == yaml.safe_load((REPO / "kind-config.yaml").read_text())["name"]
    worker = EXAMPLE["spec"]["worker"]
    assert {worker["tritonImage"], worker["gatewayImage"]} <= built


def test_helm_install_in_the_readme_runs_the_built_operator_image():
    sets = dict(re.findall(r"--set (\S+?)=(\S+)", QUICKSTART))
    assert sets["workers.gpu"] == "false"
    (deployment,) = [d for d in manifests({"operator": {"image": {"repository": sets["operator.image.repository"]}},
                                           "workers": {"gpu": False}}) if d["kind"] == "Deployment"]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] in _built_images()


def test_example_pipeline_builds_cpu_only_workers():
    spec = api.parse_spec(EXAMPLE["spec"])
    state = desired_state(EXAMPLE["metadata"]["name"], EXAMPLE["metadata"]["namespace"], spec)
    pods = [c["spec"]["template"]["spec"] for c in state.children if c["kind"] == "Deployment"]
    assert pods
    for pod in pods:
        for container in pod.get("initContainers", []) + pod["containers"]:
            for section in ("requests", "limits"):
                assert GPU_RESOURCE not in container.get("resources", {}).get(section, {})


def test_stream_command_targets_the_pipeline_service():
    name = EXAMPLE["metadata"]["name"]
    assert f"kubectl port-forward svc/{name} 8080:8080" in QUICKSTART
    assert "speechops stream --url ws://127.0.0.1:8080/v1/stream" in QUICKSTART


def test_chart_app_version_is_the_project_version():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == project
    assert all(image.endswith(f":{project}") for image in _built_images())
