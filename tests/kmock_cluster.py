"""KMock's Kubernetes emulator in a background thread, driven like an API server.

The emulator stores what it is sent and enforces nothing, so `Cluster.apply` does what
an API server would for a SpeechPipeline: validates it against the CRD's schema,
applies the schema's defaults, and sets uid, generation and creationTimestamp. Callers
play the Deployment controller where they need ready pods (`mark_ready`). Used by the
operator tests and by benchmarks/reconcile.py.
"""

from __future__ import annotations

import asyncio
import logging
import copy
import functools
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import kmock
import requests

from speechops_contract import api
from speechops.kube import KINDS
from tests import envtest
from tests.crd_schema import apply_defaults, prune, root_schema, validate

WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
PIPELINES = f"/apis/{api.GROUP}/{api.VERSION}"


@functools.lru_cache(maxsize=1)
def _status_schema() -> dict[str, Any]:
    return root_schema()["properties"]["status"]


class Emulator(kmock.KubernetesEmulator):
    """KMock's emulator plus `generateName`, which kopf's Events rely on (without it
    every Event after the first is a 409), and the API server's pruning of SpeechPipeline
    status fields the CRD does not declare (a misnamed field vanishes, as on a cluster)."""

    async def _handle(self, request):
        meta = request.data.get("metadata") if isinstance(request.data, dict) else None
        if str(request.method).upper().endswith("POST") and meta and not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:8]
        if (f"/{api.PLURAL}/" in request.url.path and isinstance(request.data, dict)
                and isinstance(request.data.get("status"), dict)):
            request.data["status"] = prune(request.data["status"], _status_schema())
        return await super()._handle(request)


class Cluster:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self.emulator: kmock.KubernetesEmulator | None = None
        self.url = ""
        self.http = requests.Session()
        self._thread = threading.Thread(target=self._run, name="kmock", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("KMock did not start")

    def _run(self) -> None:
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)   # one line per request otherwise
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with Emulator() as emulator, kmock.Server(emulator):
            emulator.resources.load_bundled()
            emulator.resources[f"{api.GROUP}/{api.VERSION}/{api.PLURAL}"] = kmock.ResourceInfo(
                kind=api.KIND, singular="speechpipeline", namespaced=True, shortnames={"sp"},
                subresources={"status"}, verbs={"list", "watch", "get", "create", "patch", "update", "delete"})
            self.emulator = emulator
            self.url = str(emulator.servers[0].url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def close(self) -> None:
        self.http.close()
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    # ------------------------------------------------------------ API client side

    def _call(self, method: str, path: str, body: Any = None, ok=(200, 201)) -> Any:
        headers = {"Content-Type": "application/merge-patch+json"} if method == "PATCH" else {}
        resp = self.http.request(method, self.url + path, json=body, headers=headers, timeout=60)
        if resp.status_code not in ok:
            raise AssertionError(f"{method} {path}: {resp.status_code} {resp.text[:300]}")
        return resp.json() if resp.content else None

    def get(self, path: str) -> dict | None:
        resp = self.http.get(self.url + path, timeout=60)
        return resp.json() if resp.status_code == 200 else None

    def apply(self, doc: dict[str, Any], check_schema: bool = True) -> dict[str, Any]:
        """Creates a SpeechPipeline as an API server would (schema check, defaults, uid)."""
        doc = copy.deepcopy(doc)
        if check_schema:
            problems = validate(doc)
            assert problems == [], problems
            doc = apply_defaults(doc, root_schema())
        meta = doc["metadata"]
        meta.update(uid=str(uuid.uuid4()), generation=1, resourceVersion="1",
                    creationTimestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        return self._call("POST", f"{PIPELINES}/namespaces/{meta['namespace']}/{api.PLURAL}", doc)

    def patch_spec(self, namespace: str, name: str, spec_patch: dict[str, Any]) -> None:
        path = f"{PIPELINES}/namespaces/{namespace}/{api.PLURAL}/{name}"
        current = self.get(path)
        merged = apply_defaults({"spec": _merge(current["spec"], spec_patch)}, root_schema())
        assert validate({**current, **merged}) == []
        generation = current["metadata"].get("generation", 1) + 1
        self._call("PATCH", path, {"spec": spec_patch, "metadata": {"generation": generation}})

    def pipeline(self, namespace: str, name: str) -> dict | None:
        return self.get(f"{PIPELINES}/namespaces/{namespace}/{api.PLURAL}/{name}")

    def delete_pipeline(self, namespace: str, name: str) -> None:
        self._call("DELETE", f"{PIPELINES}/namespaces/{namespace}/{api.PLURAL}/{name}")

    def child(self, kind: str, namespace: str, name: str) -> dict | None:
        return self.get(KINDS[kind].path(namespace, name))

    def delete_child(self, kind: str, namespace: str, name: str) -> None:
        self._call("DELETE", KINDS[kind].path(namespace, name))

    def edit_child(self, kind: str, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self._call("PATCH", KINDS[kind].path(namespace, name), patch)

    def mark_ready(self, namespace: str, name: str, ready: int | None = None) -> None:
        """Plays the Deployment controller: all wanted pods exist, updated and ready."""
        path = f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}"
        want = self.get(path)["spec"]["replicas"]
        ready = want if ready is None else ready
        self._call("PATCH", path + "/status", {"status": {
            "replicas": want, "updatedReplicas": want, "readyReplicas": ready, "availableReplicas": ready}})

    def requests(self) -> list[tuple[str, str, str]]:
        """(method, path, user agent) of every request so far."""
        return [(str(r.method).split(".")[-1].upper(), str(r.url.path), r.headers.get("User-Agent", ""))
                for r in list(self.emulator._requests)]

    def writes(self) -> list[tuple[str, str]]:
        """(method, path) of every write so far, Events excluded."""
        return [(m, p) for m, p, _ in self.requests() if m in WRITE_METHODS and "/events" not in p]


def _merge(base: Any, patch: Any) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            else:
                out[k] = _merge(base.get(k), v)
        return out
    return patch


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    """envtest's poll, at KMock's pace (it answers in milliseconds)."""
    return envtest.wait_for(predicate, timeout=timeout, what=what, every=0.05)


def write_kubeconfig(path: Path, url: str) -> Path:
    path.write_text(f"""
kind: Config
current-context: kmock
clusters: [{{name: kmock, cluster: {{server: "{url}"}}}}]
users: [{{name: kmock, user: {{}}}}]
contexts: [{{name: kmock, context: {{cluster: kmock, user: kmock}}}}]
""")
    return path
