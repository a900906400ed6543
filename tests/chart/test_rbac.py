"""The chart's ClusterRole grants exactly what the operator's code uses.

The operator's needs are derived from its source, not written down by hand:

- every call on the operator's Kubernetes client (`kube.get/list/create/patch/delete`)
  is found in the AST of operator/speechops/**; the kind it addresses is a literal
  (`"PriorityClass"`, `api.KIND`) or, for the generic apply loops, the set of kinds
  declared in VARIABLE_KIND_CALLS below, each computed from the operator's own tables
  (reconcile.CHILD_KINDS, the desired-state builders);
- kind -> API group and resource comes from the client's own table (kube.KINDS);
- every kopf handler decorator (`@kopf.on.*`, `@kopf.timer`, `@kopf.daemon`,
  `@kopf.index`) makes kopf list and watch its resource, and a change handler makes
  kopf patch it (finalizers, progress annotations) and its status subresource
  (handler results and progress);
- kopf's own needs come from kopf's source (its references for CRDs, events and
  peering objects).

The test fails when the code needs a permission the ClusterRole lacks, when the
ClusterRole grants one the code never uses, and when a generic call site appears that
nobody declared (so a new apply loop cannot silently widen the operator's needs).
"""

from __future__ import annotations

import ast
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import pytest
from kopf._cogs.structs import references as kopf_refs

from chartkit import VALUE_SETS, by_kind, chart_crds, manifests

speechops = importlib.import_module("speechops")
kube = pytest.importorskip("speechops.kube", reason="operator Kubernetes client not merged yet")
reconcile = importlib.import_module("speechops.reconcile")
api = importlib.import_module("speechops.api")

SOURCE = Path(speechops.__file__).resolve().parent
CLIENT_VERBS = {"get": "get", "list": "list", "create": "create", "patch": "patch", "delete": "delete"}
CHANGE_HANDLERS = {"create", "update", "delete", "resume", "field", "timer", "daemon"}


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
    """A string literal, or a constant of speechops.api / speechops.names."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in ("api", "names"):
        value = getattr(importlib.import_module(f"speechops.{node.value.id}"), node.attr, None)
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


def kopf_handler_resources() -> list[tuple[str, str, bool]]:
    """(group, plural, is_change_handler) for every kopf handler decorator."""
    found = []
    for _, tree in _modules():
        for func in _functions(tree):
            for deco in func.decorator_list:
                if not isinstance(deco, ast.Call):
                    continue
                name = ast.unparse(deco.func)
                if not (name.startswith("kopf.on.") or name in ("kopf.timer", "kopf.daemon", "kopf.index")):
                    continue
                kind = name.rsplit(".", 1)[1]
                if kind in ("login", "startup", "cleanup", "probe", "mutate", "validate"):
                    continue
                args = [_constant(a) for a in deco.args]
                group, plural = _resolve_resource(args)
                found.append((group, plural, kind in CHANGE_HANDLERS))
    return found


def _resolve_resource(args: list[str | None]) -> tuple[str, str]:
    if None in args or not args:
        pytest.fail(f"kopf handler with a resource this test cannot read: {args}")
    if len(args) == 1 and args[0] in (api.KIND, api.PLURAL, f"{api.PLURAL}.{api.GROUP}"):
        return api.GROUP, api.PLURAL
    if len(args) == 3:                   # group, version, plural
        return args[0], args[2]
    if len(args) == 2:                   # "group/version", plural  or  group, plural
        return args[0].split("/")[0], args[1]
    pytest.fail(f"unexpected kopf resource arguments {args}")


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
    for stale in sorted(set(VARIABLE_KIND_CALLS) - seen_variable_sites):
        problems.append(f"VARIABLE_KIND_CALLS names {stale}, which makes no client call any more")
    for group, plural, changes in kopf_handler_resources():
        verbs = ["list", "watch", "patch"] if changes else ["list", "watch"]
        for verb in verbs:
            needs.setdefault(Need(group, plural, verb), "kopf handler")
        if changes and _has_status_subresource(group, plural):
            needs.setdefault(Need(group, f"{plural}/status", "patch"), "kopf handler results and progress")
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
