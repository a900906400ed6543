"""The chart's ClusterRole grants exactly what the operator's code uses.

The operator's needs are derived from its source, not written down by hand:

- every call of the official `kubernetes` client (`core.patch_namespaced_pod(...)`) is
  found in the AST of operator/speechops/**, and the client's own generated code says
  which HTTP method and path it sends, hence which verb on which resource;
- every call on the operator's own client (`kube.get/list/create/patch/delete`) is
  found the same way; the kind it addresses is a literal
  (`"PriorityClass"`, `api.KIND`) or, for the generic apply loops, the set of kinds
  declared in VARIABLE_KIND_CALLS below, each computed from the operator's own tables
  (reconcile.CHILD_KINDS, the desired-state builders);
- kind -> API group and resource comes from the client's own table (kube.KINDS);
- every kopf handler the operator's modules register (read from kopf's registry after
  importing them) makes kopf list and watch its resource, and a change handler or timer
  makes kopf patch it (finalizers, progress annotations) and its status subresource
  (handler results, `patch.status`);
- kopf's own needs come from kopf's source (its references for CRDs, events and
  peering objects).

The test fails when the code needs a permission the ClusterRole lacks, when the
ClusterRole grants one the code never uses, and when a generic call site appears that
nobody declared (so a new apply loop cannot silently widen the operator's needs).
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import kopf
import kubernetes.client
import pytest
from kopf._cogs.structs import references as kopf_refs

from chartkit import VALUE_SETS, by_kind, chart_crds, manifests

speechops = importlib.import_module("speechops")
kube = importlib.import_module("speechops.kube")
reconcile = importlib.import_module("speechops.reconcile")
api = importlib.import_module("speechops_contract.api")

SOURCE = Path(speechops.__file__).resolve().parent
CLIENT_VERBS = {"get": "get", "list": "list", "create": "create", "patch": "patch", "delete": "delete"}


@dataclass(frozen=True, order=True)
class Need:
    group: str
    resource: str    # plural, with "/subresource" when one
    verb: str

    def __str__(self) -> str:
        return f"{self.verb} {self.resource}" + (f".{self.group}" if self.group else "")


def _child_kinds() -> set[str]:
    return {kind for kind, _ in reconcile.CHILD_KINDS}


# Call sites whose kind is a variable: which kinds flow into them, from the code's own
# tables. Key: "module.function"; value: the kinds.
VARIABLE_KIND_CALLS: dict[str, set[str]] = {
    # Creates or patches each child of desired_state(): ConfigMap, Deployments,
    # Service, PodDisruptionBudget.
    "reconcile.apply_child": _child_kinds(),
    # Creates a missing shared PriorityClass (desired_state().priority_classes).
    "reconcile.ensure_priority_class": {"PriorityClass"},
    # Looks up and deletes children the spec no longer wants / all of them on delete.
    "reconcile.remove_unwanted": _child_kinds(),
    "reconcile.delete_children": _child_kinds(),
}


# ---------------------------------------------------------------- source scanning

@dataclass(frozen=True)
class CallSite:
    where: str          # module.function
    verb: str
    kind: str | None    # None: a variable
    subresource: str | None


def _modules() -> Iterable[tuple[str, ast.Module]]:
    for path in sorted(SOURCE.rglob("*.py")):
        rel = path.relative_to(SOURCE).with_suffix("")
        yield ".".join(rel.parts), ast.parse(path.read_text(), filename=str(path))


def _constant(node: ast.AST) -> str | None:
    """A string literal, or a constant of speechops_contract.api / speechops_contract.names."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in ("api", "names"):
        value = getattr(importlib.import_module(f"speechops_contract.{node.value.id}"), node.attr, None)
        return value if isinstance(value, str) else None
    return None


def _functions(tree: ast.AST) -> Iterable[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def client_calls() -> list[CallSite]:
    sites = []
    for module, tree in _modules():
        if module == "kube":
            continue   # the client itself
        for func in _functions(tree):
            for node in ast.walk(func):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr in CLIENT_VERBS and "kube" in ast.unparse(node.func.value)):
                    continue
                kind = None
                if node.args and node.func.attr != "create":
                    kind = _constant(node.args[0])
                elif node.args and isinstance(node.args[0], ast.Dict):
                    kinds = [_constant(v) for k, v in zip(node.args[0].keys, node.args[0].values)
                             if isinstance(k, ast.Constant) and k.value == "kind"]
                    kind = kinds[0] if kinds else None
                sub = next((_constant(k.value) for k in node.keywords if k.arg == "subresource"), None)
                sites.append(CallSite(f"{module}.{func.name}", CLIENT_VERBS[node.func.attr], kind, sub))
    return sites


@functools.lru_cache(maxsize=None)
def official_client_requests(method: str, api_class: str | None = None) -> frozenset[tuple[str, str]]:
    """(HTTP method, path) a `kubernetes.client` API method sends, read from the
    client's generated request builder; empty when no API class has the method.
    `api_class` narrows names several classes share (CoreV1Api and EventsV1Api)."""
    found = set()
    for cls_name in [api_class] if api_class else dir(kubernetes.client):
        cls = getattr(kubernetes.client, cls_name)
        builder = getattr(cls, f"_{method}_serialize", None) if isinstance(cls, type) else None
        if builder is None:
            continue
        src = inspect.getsource(builder)
        http = re.search(r"method='(\w+)'", src).group(1)
        path = re.search(r"resource_path='([^']+)'", src).group(1)
        found.add((http, path))
    return frozenset(found)


def request_need(http: str, path: str, watch: bool = False) -> Need:
    parts = [p for p in path.split("/") if p]
    group = "" if parts[0] == "api" else parts[1]
    rest = parts[2:] if parts[0] == "api" else parts[3:]
    if rest[:2] == ["namespaces", "{namespace}"] and len(rest) > 2:
        rest = rest[2:]
    resource, named = rest[0], len(rest) > 1
    if len(rest) > 2:
        resource += "/" + rest[2]
    verb = {"POST": "create", "PATCH": "patch", "PUT": "update"}.get(http)
    if http == "GET":
        verb = "get" if named else ("watch" if watch else "list")
    elif http == "DELETE":
        verb = "delete" if named else "deletecollection"
    return Need(group, resource, verb)


def _api_classes(func: ast.AST) -> dict[str, str]:
    """Variable -> kubernetes.client API class, from `x = ...CoreV1Api(...)` and
    `x: kubernetes.client.CoreV1Api` parameters inside one function."""
    found = {}
    for node in ast.walk(func):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            cls = ast.unparse(node.value.func).rsplit(".", 1)[-1]
            for target in node.targets:
                if isinstance(target, ast.Name) and cls.endswith("Api"):
                    found[target.id] = cls
        if isinstance(node, ast.arg) and node.annotation is not None:
            cls = ast.unparse(node.annotation).rsplit(".", 1)[-1]
            if cls.endswith("Api") and cls != "ApiClient":
                found[node.arg] = cls
    return found


def official_client_calls() -> list[tuple[str, Need]]:
    calls = []
    for module, tree in _modules():
        for func in _functions(tree):
            classes = _api_classes(func)
            for node in ast.walk(func):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                    continue
                receiver = ast.unparse(node.func.value)
                api_class = classes.get(receiver)
                if isinstance(node.func.value, ast.Call):     # CoreV1Api(client).read_...
                    api_class = ast.unparse(node.func.value.func).rsplit(".", 1)[-1]
                    api_class = api_class if api_class.endswith("Api") else None
                requests = official_client_requests(node.func.attr, api_class)
                watch = any(k.arg == "watch" for k in node.keywords)
                for http, path in sorted(requests):
                    calls.append((f"{module}.{func.name}", request_need(http, path, watch)))
    return calls


def kopf_handler_resources() -> list[tuple[str, str, bool, str]]:
    """(group, plural, is_change_handler, handler) for every kopf handler the operator's modules
    register, read from kopf's own registry after importing them: this sees handlers
    registered in loops (`kopf.on.event(*resource)(fn)`) as well as decorators."""
    # Into a fresh registry, (re)importing every module that registers handlers: a module
    # first imported inside another test's throwaway registry (tests/conftest.py's
    # kopf_registry) would otherwise be missing from the default one.
    previous = kopf.get_default_registry()
    kopf.set_default_registry(kopf.OperatorRegistry())
    try:
        for module, tree in _modules():
            registers = any(isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "kopf"
                            and n.attr in ("on", "timer", "daemon", "index") for n in ast.walk(tree))
            if registers:
                name = f"speechops.{module}"
                if name in sys.modules:
                    importlib.reload(sys.modules[name])
                else:
                    importlib.import_module(name)
        registry = kopf.get_default_registry()
    finally:
        kopf.set_default_registry(previous)
    found = set()
    for attr, changes in (("_watching", False), ("_indexing", False), ("_changing", True), ("_spawning", True)):
        for handler in getattr(registry, attr).get_all_handlers():
            if not getattr(handler.fn, "__module__", "").startswith("speechops."):
                continue   # handlers a test registered, not the operator's
            selector = handler.selector
            found.add((selector.group or "", selector.plural or selector.any_name, changes,
                       f"kopf handler {handler.fn.__module__.removeprefix('speechops.')}.{handler.fn.__name__}"))
    return sorted(found)


# ---------------------------------------------------------------- derivation

def _kind_resource(kind: str) -> tuple[str, str]:
    k = kube.KINDS[kind]
    group = k.api_version.split("/")[0] if "/" in k.api_version else ""
    return group, k.plural


def _selector_need(selector, verbs: Iterable[str]) -> set[Need]:
    group = selector.group or ""
    return {Need(group, selector.plural or selector.any_name, v) for v in verbs}


def kopf_own_needs(watch_all_namespaces: bool) -> dict[Need, str]:
    peering = kopf_refs.CLUSTER_PEERINGS_K if watch_all_namespaces else kopf_refs.NAMESPACED_PEERINGS_K
    needs: dict[Need, str] = {}
    for need in _selector_need(kopf_refs.CRDS, ("list", "watch")):
        needs[need] = "kopf discovers and follows CRDs"
    for need in _selector_need(kopf_refs.EVENTS, ("create",)):
        needs[need] = "kopf posts handler outcomes and kopf.event() as Events"
    for need in _selector_need(peering, ("list", "watch", "patch")):
        needs[need] = "kopf peering: heartbeats and pausing"
    return needs


def code_needs() -> tuple[dict[Need, str], list[str]]:
    """Need -> the first place that needs it; plus problems (undeclared call sites)."""
    needs: dict[Need, str] = {}
    problems: list[str] = []
    seen_variable_sites = set()
    for site in client_calls():
        if site.kind is not None:
            kinds = {site.kind}
        elif site.where in VARIABLE_KIND_CALLS:
            kinds = VARIABLE_KIND_CALLS[site.where]
            seen_variable_sites.add(site.where)
        else:
            problems.append(f"{site.where}: kube.{site.verb}() on a kind this test cannot resolve; "
                            f"declare its kinds in VARIABLE_KIND_CALLS")
            continue
        for kind in kinds:
            group, plural = _kind_resource(kind)
            resource = f"{plural}/{site.subresource}" if site.subresource else plural
            needs.setdefault(Need(group, resource, site.verb), site.where)
    for where, need in official_client_calls():
        needs.setdefault(need, where)
    for stale in sorted(set(VARIABLE_KIND_CALLS) - seen_variable_sites):
        problems.append(f"VARIABLE_KIND_CALLS names {stale}, which makes no client call any more")
    # Children carry blockOwnerDeletion on their owner reference, which
    # OwnerReferencesPermissionEnforcement (OpenShift's default) admits only from a writer
    # that may update the owner's finalizers.
    owner = reconcile.owner_reference({"metadata": {"name": "n", "uid": "u"}})
    if owner.get("blockOwnerDeletion"):
        needs.setdefault(Need(api.GROUP, f"{api.PLURAL}/finalizers", "update"), "reconcile.owner_reference")
    for group, plural, changes, where in kopf_handler_resources():
        verbs = ["list", "watch", "patch"] if changes else ["list", "watch"]
        for verb in verbs:
            needs.setdefault(Need(group, plural, verb), where)
        if changes and _has_status_subresource(group, plural):
            needs.setdefault(Need(group, f"{plural}/status", "patch"), where)
    return needs, problems


def _has_status_subresource(group: str, plural: str) -> bool:
    for crd in chart_crds():
        if crd["spec"]["group"] == group and crd["spec"]["names"]["plural"] == plural:
            return any("status" in v.get("subresources", {}) for v in crd["spec"]["versions"])
    return False


def granted(values: dict) -> set[Need]:
    (role,) = by_kind(manifests(values), "ClusterRole")
    rules = role["rules"]
    grants = set()
    for rule in rules:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], f"wildcard in ClusterRole {field}: {rule}"
        assert "resourceNames" not in rule or rule["resourceNames"]
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    grants.add(Need(group, resource, verb))
    return grants


def _report(missing: set[Need], unused: set[Need], needs: dict[Need, str]) -> str:
    lines = [f"missing from the ClusterRole: {n}  (needed by {needs[n]})" for n in sorted(missing)]
    lines += [f"granted but never used: {n}" for n in sorted(unused)]
    return "\n".join(lines)


@pytest.mark.parametrize("values_id, all_namespaces", [("defaults", True), ("namespaced", False)])
def test_cluster_role_grants_exactly_what_the_code_uses(values_id, all_namespaces):
    needs, problems = code_needs()
    assert not problems, "\n".join(problems)
    needs = {**kopf_own_needs(all_namespaces), **needs}
    grants = granted(VALUE_SETS[values_id])
    # One ClusterRole serves both peering modes (the mode follows operator.watchNamespaces),
    # so the other mode's peering grants are expected in either case.
    other_mode = set(kopf_own_needs(not all_namespaces)) - set(needs)
    missing, unused = set(needs) - grants, grants - set(needs) - other_mode
    assert not missing and not unused, _report(missing, unused, needs)


def test_code_scan_finds_the_operator_calls():
    # The scan must see the reconciler's writes, or the test above proves nothing.
    sites = client_calls()
    assert {s.verb for s in sites} >= {"get", "create", "patch", "delete"}
    assert any(s.subresource == "status" and s.kind == api.KIND for s in sites)


def test_a_permission_the_code_does_not_use_is_reported():
    needs, _ = code_needs()
    needs = {**kopf_own_needs(True), **needs}
    grants = granted({}) | {Need("", "secrets", "get")}
    assert Need("", "secrets", "get") in grants - set(needs)


def test_a_call_the_role_lacks_is_reported(monkeypatch):
    # A new generic call site that nobody declared is a problem, not silently allowed.
    monkeypatch.setattr(__import__(__name__), "VARIABLE_KIND_CALLS",
                        {k: v for k, v in VARIABLE_KIND_CALLS.items() if k != "reconcile.apply_child"})
    _, problems = code_needs()
    assert any("reconcile.apply_child" in p for p in problems)


@pytest.mark.parametrize("method, need", [
    ("list_namespaced_pod", Need("", "pods", "list")),
    ("patch_namespaced_pod", Need("", "pods", "patch")),
    ("read_namespaced_deployment", Need("apps", "deployments", "get")),
    ("patch_namespaced_deployment_scale", Need("apps", "deployments/scale", "patch")),
    ("create_namespaced_event/CoreV1Api", Need("", "events", "create")),
    ("create_namespaced_event/EventsV1Api", Need("events.k8s.io", "events", "create")),
    ("delete_priority_class", Need("scheduling.k8s.io", "priorityclasses", "delete")),
    ("patch_namespaced_custom_object_status", None),
], ids=lambda v: v if isinstance(v, str) else None)
def test_official_client_methods_map_to_rbac_needs(method, need):
    method, _, api_class = method.partition("/")
    requests = official_client_requests(method, api_class or None)
    if need is None:   # custom objects: group and plural are arguments, not in the path
        assert all("{group}" in path for _, path in requests)
        return
    assert {request_need(h, p) for h, p in requests} == {need}
