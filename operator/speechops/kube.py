"""A small asyncio Kubernetes client: get, create, merge-patch, delete, list of plain
dicts. It uses the credentials kopf logged in with, so the operator has one login.

Why not the official client: it is synchronous (a thread per call) and builds typed
models we would turn back into dicts; the reconciler only needs JSON in and out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

import aiohttp
import kopf

from speechops_contract import api


@dataclass(frozen=True)
class Kind:
    api_version: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        base = f"/api/{self.api_version}" if "/" not in self.api_version else f"/apis/{self.api_version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
        if subresource:
            base += f"/{subresource}"
        return base


KINDS: dict[str, Kind] = {
    "ConfigMap": Kind("v1", "configmaps"),
    "Pod": Kind("v1", "pods"),
    "Service": Kind("v1", "services"),
    "Event": Kind("v1", "events"),
    "Deployment": Kind("apps/v1", "deployments"),
    "ReplicaSet": Kind("apps/v1", "replicasets"),
    "PodDisruptionBudget": Kind("policy/v1", "poddisruptionbudgets"),
    "PriorityClass": Kind("scheduling.k8s.io/v1", "priorityclasses", namespaced=False),
    api.KIND: Kind(api.API_VERSION, api.PLURAL),
}


async def login(memo: kopf.Memo, **kwargs: Any) -> kopf.ConnectionInfo | None:
    """The operator's one login (the body of its kopf login handler): kopf's credentials,
    kept in `memo.kube` as the client every handler uses, renewed in place on relogin."""
    info = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
    if info is not None:
        if memo.get("kube") is None:
            memo.kube = KubeClient(info)
        else:
            await memo.kube.relogin(info)
    return info


class ApiError(Exception):
    def __init__(self, status: int, method: str, path: str, body: str):
        self.status = status
        self.method, self.path, self.body = method, path, body
        super().__init__(f"{method} {path}: HTTP {status}: {body[:300]}")


class Conflict(ApiError):
    """409: the object already exists (create) or changed under us."""


class KubeClient:
    def __init__(self, info: kopf.ConnectionInfo):
        self.info = info
        self._session: aiohttp.ClientSession | None = None
        # Counts by HTTP method, for the operator's metrics and the benchmark.
        self.requests: dict[str, int] = {}

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=50, ssl=self.info.as_ssl_context()),
                headers={**self.info.as_http_headers(), "User-Agent": "speechops-operator"},
                timeout=aiohttp.ClientTimeout(total=30),
            )
        return self._session

    async def relogin(self, info: kopf.ConnectionInfo) -> None:
        """New credentials from kopf's login handler (tokens expire). A request in flight
        on the old session fails and its handler retries."""
        self.info = info
        await self.close()
        self._session = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _request(self, method: str, path: str, body: Any = None,
                       content_type: str = "application/json", params: Mapping[str, str] | None = None) -> Any:
        self.requests[method] = self.requests.get(method, 0) + 1
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if body is not None else {}
        async with self._open().request(method, self.info.server.rstrip("/") + path, data=data,
                                        headers=headers, params=params) as resp:
            text = await resp.text()
            if resp.status == 409:
                raise Conflict(resp.status, method, path, text)
            if resp.status >= 400:
                raise ApiError(resp.status, method, path, text)
            return json.loads(text) if text else None

    async def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            return await self._request("GET", KINDS[kind].path(namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def list(self, kind: str, namespace: str | None = None,
                   label_selector: str | None = None) -> list[dict[str, Any]]:
        params = {"labelSelector": label_selector} if label_selector else None
        result = await self._request("GET", KINDS[kind].path(namespace), params=params)
        return list(result.get("items", [])) if result else []

    async def create(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        kind = KINDS[manifest["kind"]]
        return await self._request("POST", kind.path(manifest["metadata"].get("namespace")), manifest)

    async def patch(self, kind: str, namespace: str | None, name: str, patch: Mapping[str, Any],
                    subresource: str | None = None) -> dict[str, Any]:
        return await self._request("PATCH", KINDS[kind].path(namespace, name, subresource), patch,
                                   content_type="application/merge-patch+json")

    async def delete(self, kind: str, namespace: str | None, name: str) -> bool:
        """True if deleted, False if it was already gone. Children go in the background."""
        try:
            await self._request("DELETE", KINDS[kind].path(namespace, name),
                                {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"})
            return True
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise

