"""A real Kubernetes control plane for tests and benchmarks (controller-runtime's envtest
convention): etcd + kube-apiserver (+ kube-controller-manager when asked) from the
directory named by ``KUBEBUILDER_ASSETS``, on free 127.0.0.1 ports, RBAC on, every write
recorded in a JSON audit log.

    with ControlPlane(controller_manager=True) as cp:
        api = cp.api_client()                       # admin (system:masters)
        sa = cp.service_account_kubeconfig("ns", "name")   # RBAC enforced
        cp.audit_writes(since=t0, user="system:serviceaccount:ns:name")

Each process runs in its own process group and is stopped by PID; the working directory
(certs, etcd data, logs) is removed on stop. Startup: etcd + kube-apiserver + controller
manager in 5-12 s on two cores (up to ~20 s while other tests load them).
"""

from __future__ import annotations

import atexit
import datetime as dt
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

HOW_TO_GET = (
    "KUBEBUILDER_ASSETS is not set: the real-server tests need a directory holding etcd, "
    "kube-apiserver and kube-controller-manager v1.36. Get them with "
    "`export KUBEBUILDER_ASSETS=\"$(scripts/envtest.sh DIR)\"` (DIR holds the Kubernetes "
    "binaries, plain or .xz; .ci/run does this) or with controller-runtime's "
    "`setup-envtest use 1.36 -p path` (no controller manager there)."
)

WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")

AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "Metadata", "verbs": list(WRITE_VERBS)},
        {"level": "None"},
    ],
}

SERVICE_CIDR = "10.0.0.0/24"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"


class AssetsMissing(RuntimeError):
    """KUBEBUILDER_ASSETS is set but lacks a binary: a broken setup, never a skip."""


def assets_dir() -> Path | None:
    """The directory named by KUBEBUILDER_ASSETS, or None when the variable is unset."""
    value = os.environ.get("KUBEBUILDER_ASSETS", "").strip()
    return Path(value) if value else None


def find_binary(assets: Path, name: str) -> Path:
    path = assets / name
    if path.is_file() and os.access(path, os.X_OK):
        return path
    # etcd may come from the system (Debian's etcd-server) when the assets lack it.
    found = shutil.which(name) if name == "etcd" else None
    if found:
        return Path(found)
    raise AssetsMissing(f"KUBEBUILDER_ASSETS={assets} has no executable {name}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- certificates ---------------------------------------------------------------------

def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert(subject: x509.Name, key, issuer: x509.Name, issuer_key, *, ca: bool = False,
          server_names: tuple[str, ...] = (), server_ips: tuple[str, ...] = ()) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                          content_commitment=False, key_encipherment=False,
                                          data_encipherment=False, key_agreement=False,
                                          encipher_only=False, decipher_only=False), critical=True)
    else:
        usages = [x509.ExtendedKeyUsageOID.CLIENT_AUTH]
        if server_names or server_ips:
            usages.append(x509.ExtendedKeyUsageOID.SERVER_AUTH)
            b = b.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName(n) for n in server_names]
                + [x509.IPAddress(IPv4Address(ip)) for ip in server_ips]), critical=False)
        b = b.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


@dataclass(frozen=True)
class AuditEvent:
    time: dt.datetime            # when the request was received
    user: str
    verb: str
    resource: str                # "deployments", "speechpipelines/status"
    namespace: str
    name: str
    code: int

    @classmethod
    def parse(cls, raw: dict) -> "AuditEvent":
        ref = raw.get("objectRef") or {}
        resource = ref.get("resource", "")
        if ref.get("subresource"):
            resource += "/" + ref["subresource"]
        return cls(time=dt.datetime.fromisoformat(raw["requestReceivedTimestamp"]),
                   user=(raw.get("user") or {}).get("username", ""), verb=raw.get("verb", ""),
                   resource=resource, namespace=ref.get("namespace", ""), name=ref.get("name", ""),
                   code=int((raw.get("responseStatus") or {}).get("code", 0)))


class ControlPlane:
    """etcd + kube-apiserver (+ kube-controller-manager) for one test module or benchmark."""

    def __init__(self, *, controller_manager: bool = False, admission_plugins: tuple[str, ...] = (),
                 assets: Path | None = None, start_timeout: float = 60.0) -> None:
        assets = assets or assets_dir()
        if assets is None:
            raise AssetsMissing(HOW_TO_GET)
        self.etcd_bin = find_binary(assets, "etcd")
        self.apiserver_bin = find_binary(assets, "kube-apiserver")
        self.controller_manager_bin = (find_binary(assets, "kube-controller-manager")
                                       if controller_manager else None)
        self.admission_plugins = tuple(admission_plugins)
        self.start_timeout = start_timeout
        self.dir: Path | None = None
        self.url = ""
        self._procs: dict[str, subprocess.Popen] = {}
        self._logs: dict[str, Path] = {}

    # ---- life cycle ---------------------------------------------------------------------

    def __enter__(self) -> "ControlPlane":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "ControlPlane":
        self.dir = Path(tempfile.mkdtemp(prefix="speechops-envtest-"))
        atexit.register(self.stop)
        try:
            self._write_certs()
            self._start_etcd()
            self._start_apiserver()
            if self.controller_manager_bin:
                self._start_controller_manager()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for name in reversed(list(self._procs)):
            proc = self._procs.pop(name)
            _stop_group(proc)
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        atexit.unregister(self.stop)

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = self.dir / f"{name}.log"
        self._logs[name] = log
        with open(log, "wb") as out:
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self._procs[name] = proc
        return proc

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self._logs.get(name)
        if path is None or not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def _wait(self, name: str, ready, what: str) -> None:
        deadline = time.monotonic() + self.start_timeout
        proc = self._procs[name]
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}")
            if ready():
                return
            time.sleep(0.1)
        raise TimeoutError(f"{name} not {what} after {self.start_timeout:.0f} s:\n{self.log_tail(name)}")

    # ---- certificates and files ------------------------------------------------------

    def _write_certs(self) -> None:
        d = self.dir
        ca_key = _key()
        ca_name = _name("speechops-envtest-ca")
        ca = _cert(ca_name, ca_key, ca_name, ca_key, ca=True)
        self.ca_file = d / "ca.crt"
        self.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))

        def pair(stem: str, subject: x509.Name, **kw) -> tuple[Path, Path]:
            key = _key()
            cert = _cert(subject, key, ca_name, ca_key, **kw)
            crt, k = d / f"{stem}.crt", d / f"{stem}.key"
            crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
            k.write_bytes(_pem_key(key))
            k.chmod(0o600)
            return crt, k

        self.serving = pair("apiserver", _name("kube-apiserver"),
                            server_names=("localhost", "kubernetes", "kubernetes.default",
                                          "kubernetes.default.svc",
                                          "kubernetes.default.svc.cluster.local"),
                            server_ips=("127.0.0.1", "10.0.0.1"))
        self.admin_cert = pair("admin", _name("admin", "system:masters"))
        self.controller_manager_cert = pair("controller-manager", _name("system:kube-controller-manager"))
        sa_key = _key()
        self.sa_key_file = d / "sa.key"
        self.sa_key_file.write_bytes(_pem_key(sa_key))
        self.sa_pub_file = d / "sa.pub"
        self.sa_pub_file.write_bytes(sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        self.audit_policy_file = d / "audit-policy.yaml"
        self.audit_policy_file.write_text(yaml.safe_dump(AUDIT_POLICY))
        self.audit_log = d / "audit.log"

    def _kubeconfig(self, path: Path, user: dict) -> Path:
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "envtest", "cluster": {
                "server": self.url, "certificate-authority": str(self.ca_file)}}],
            "users": [{"name": "user", "user": user}],
            "contexts": [{"name": "envtest", "context": {"cluster": "envtest", "user": "user"}}],
            "current-context": "envtest",
        }))
        path.chmod(0o600)
        return path

    # ---- processes ----------------------------------------------------------------------

    def _start_etcd(self) -> None:
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        self._spawn("etcd", [
            str(self.etcd_bin), "--name=default", f"--data-dir={self.dir / 'etcd'}",
            f"--listen-client-urls={self.etcd_url}", f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=default=http://127.0.0.1:{peer}",
            "--unsafe-no-fsync",            # a test's data: speed over durability
            "--log-level=warn",
        ])
        self._wait("etcd", lambda: _http_ok(self.etcd_url + "/health"), "healthy")

    def _start_apiserver(self) -> None:
        port = free_port()
        self.url = f"https://127.0.0.1:{port}"
        crt, key = self.serving
        args = [
            str(self.apiserver_bin),
            f"--etcd-servers={self.etcd_url}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={port}",
            f"--tls-cert-file={crt}", f"--tls-private-key-file={key}",
            f"--client-ca-file={self.ca_file}",
            f"--service-account-key-file={self.sa_pub_file}",
            f"--service-account-signing-key-file={self.sa_key_file}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            "--authorization-mode=Node,RBAC",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true",
            f"--audit-policy-file={self.audit_policy_file}", f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json", "--audit-log-mode=blocking",
        ]
        if self.admission_plugins:
            args.append("--enable-admission-plugins=" + ",".join(self.admission_plugins))
        self._spawn("kube-apiserver", args)
        self.admin_kubeconfig = self._kubeconfig(self.dir / "admin.kubeconfig", {
            "client-certificate": str(self.admin_cert[0]), "client-key": str(self.admin_cert[1])})
        context = self._admin_ssl_context()
        self._wait("kube-apiserver", lambda: _http_ok(self.url + "/readyz", context), "ready")

    def _start_controller_manager(self) -> None:
        crt, key = self.controller_manager_cert
        kubeconfig = self._kubeconfig(self.dir / "controller-manager.kubeconfig",
                                      {"client-certificate": str(crt), "client-key": str(key)})
        self._spawn("kube-controller-manager", [
            str(self.controller_manager_bin), f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
            f"--service-account-private-key-file={self.sa_key_file}",
            f"--root-ca-file={self.ca_file}", "--use-service-account-credentials",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--leader-elect=false", "--controllers=*",
        ])
        # Working, not just listening: its ServiceAccount controller has made the default
        # namespace's "default" ServiceAccount.
        self._wait("kube-controller-manager",
                   lambda: self._admin_get("/api/v1/namespaces/default/serviceaccounts/default") == 200,
                   "running its controllers")

    # ---- clients --------------------------------------------------------------------------

    def _admin_ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.load_cert_chain(str(self.admin_cert[0]), str(self.admin_cert[1]))
        return context

    def get_json(self, path: str):
        """GET a path as admin (e.g. /openapi/v3/apis/GROUP/VERSION) and decode its JSON."""
        with urllib.request.urlopen(self.url + path, context=self._admin_ssl_context(), timeout=30) as r:
            return json.load(r)

    def _admin_get(self, path: str) -> int:
        try:
            with urllib.request.urlopen(self.url + path, context=self._admin_ssl_context(), timeout=5) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except OSError:
            return 0

    def api_client(self, kubeconfig: Path | None = None):
        """A kubernetes.client.ApiClient; admin (system:masters) unless a kubeconfig is given."""
        from kubernetes import config
        return config.new_client_from_config(config_file=str(kubeconfig or self.admin_kubeconfig))

    def service_account_kubeconfig(self, namespace: str, name: str, *, create: bool = True,
                                   expiration_seconds: int = 3600) -> Path:
        """A kubeconfig that authenticates as ServiceAccount namespace/name with a token
        from the TokenRequest API (what a pod's projected token is)."""
        from kubernetes import client
        with self.api_client() as api:
            core = client.CoreV1Api(api)
            if create:
                try:
                    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
                except client.ApiException as e:
                    if e.status != 409:
                        raise
                try:
                    core.create_namespaced_service_account(
                        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name)))
                except client.ApiException as e:
                    if e.status != 409:
                        raise
            token = core.create_namespaced_service_account_token(name, namespace, client.AuthenticationV1TokenRequest(
                spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=expiration_seconds))).status.token
        return self._kubeconfig(self.dir / f"sa-{namespace}-{name}.kubeconfig", {"token": token})

    def _dynamic(self, api):
        """A DynamicClient whose discovery cache lives (and goes) with this control plane."""
        from kubernetes.dynamic import DynamicClient
        return DynamicClient(api, cache_file=str(self.dir / "discovery-cache.json"))

    def apply(self, docs, *, namespace: str | None = None, dry_run: bool = False,
              field_manager: str = "speechops-tests", kubeconfig: Path | None = None) -> list[dict]:
        """Server-side apply of manifests (dicts, as `kubectl apply --server-side`), in order;
        with dry_run the server validates and admits them but stores nothing
        (`--dry-run=server`). Namespaced objects without a namespace go into `namespace`.
        Returns the objects the server answered with. CRDs are waited for (Established)
        before the next document."""
        from kubernetes.dynamic.exceptions import ResourceNotFoundError
        out = []
        with self.api_client(kubeconfig) as api:
            dynamic = self._dynamic(api)
            for doc in docs:
                if not doc:
                    continue
                try:
                    resource = dynamic.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
                except ResourceNotFoundError:     # a CRD applied moments ago: rediscover
                    dynamic = self._dynamic(api)
                    resource = dynamic.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
                ns = (doc["metadata"].get("namespace") or namespace) if resource.namespaced else None
                result = resource.server_side_apply(
                    body=doc, name=doc["metadata"]["name"], namespace=ns, field_manager=field_manager,
                    force_conflicts=True, dry_run="All" if dry_run else None,
                    # as kubectl: an unknown or duplicate field is an error, not a warning
                    query_params=[("fieldValidation", "Strict")])
                out.append(result.to_dict())
                if doc["kind"] == "CustomResourceDefinition" and not dry_run:
                    self.wait_established(doc["metadata"]["name"])
        return out

    def delete(self, docs, *, namespace: str | None = None) -> None:
        """Deletes the objects the manifests name (a missing one is fine)."""
        from kubernetes.dynamic.exceptions import NotFoundError
        with self.api_client() as api:
            dynamic = self._dynamic(api)
            for doc in docs:
                if not doc:
                    continue
                resource = dynamic.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
                ns = (doc["metadata"].get("namespace") or namespace) if resource.namespaced else None
                try:
                    resource.delete(name=doc["metadata"]["name"], namespace=ns)
                except NotFoundError:
                    pass

    def wait_established(self, crd_name: str, timeout: float = 30.0) -> dict:
        """Waits for a CustomResourceDefinition's Established condition; returns the CRD."""
        from kubernetes import client
        deadline = time.monotonic() + timeout
        with self.api_client() as api:
            ext = client.ApiextensionsV1Api(api)
            while True:
                crd = api.sanitize_for_serialization(ext.read_custom_resource_definition(crd_name))
                conditions = {c["type"]: c["status"] for c in crd.get("status", {}).get("conditions", [])}
                if conditions.get("Established") == "True":
                    return crd
                if time.monotonic() > deadline:
                    raise TimeoutError(f"CRD {crd_name} not Established: {crd.get('status')}")
                time.sleep(0.1)

    # ---- audit log -------------------------------------------------------------------------

    def audit_events(self, *, since: dt.datetime | None = None, until: dt.datetime | None = None,
                     user: str | None = None, settle: float = 0.5) -> list[AuditEvent]:
        """Write requests (create/update/patch/delete) the API server answered in
        [since, until), optionally of one user. `settle` waits for the events of requests
        still in flight to reach the log."""
        if settle:
            time.sleep(settle)
        events = []
        if not self.audit_log.exists():
            return events
        with open(self.audit_log) as f:
            for line in f:
                if not line.strip():
                    continue
                raw = json.loads(line)
                if raw.get("stage") != "ResponseComplete" and raw.get("stage") != "Panic":
                    continue
                event = AuditEvent.parse(raw)
                if since is not None and event.time < since:
                    continue
                if until is not None and event.time >= until:
                    continue
                if user is not None and event.user != user:
                    continue
                events.append(event)
        return events

    def audit_writes(self, **kwargs) -> Counter:
        """Counts of writes by (user, verb, resource, response code); see audit_events."""
        return Counter((e.user, e.verb, e.resource, e.code) for e in self.audit_events(**kwargs))


def now() -> dt.datetime:
    """The current time in the audit log's terms (UTC, aware)."""
    return dt.datetime.now(dt.timezone.utc)


def wait_for(check, timeout: float = 30.0, what: str = "condition", details=lambda: "", every: float = 0.3):
    """Polls check() until it returns something true (returned); on timeout fails saying
    what was awaited and details() (e.g. a log tail)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{details()}")
        time.sleep(every)


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, context=context, timeout=2) as r:
            return r.status == 200
    except (OSError, urllib.error.URLError):
        return False


def _stop_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the process group the process leads, then SIGKILL it if still there."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
