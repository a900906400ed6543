"""Run the real tritonserver binary that ships inside the nvidia-pytriton wheel.

Used by `speechops up` and by the tests: build a model repository from the models in
this package (configs rendered by the operator's own builder), then start tritonserver
on free local ports, wait until every model is ready, and stop it cleanly.

Worker pods run tritonserver from their image instead; nothing here is needed there.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import signal
import site
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from speechops_contract.catalog import MODELS
from speechops_contract import model_config

MODELS_DIR = Path(__file__).resolve().parent / "models"
# The Python-backend stub starts its interpreter isolated from PYTHONPATH; model.py adds
# the directories named here (os.pathsep-separated) to sys.path before importing speechops.
SOURCE_ROOTS_ENV = "SPEECHOPS_SOURCE_ROOTS"
# Site directories of a virtualenv this process runs in (the stub only sees the base
# interpreter's); model.py passes them to site.addsitedir.
SITE_DIRS_ENV = "SPEECHOPS_SITE_DIRS"

ProgressFn = Callable[[str], None]


class TritonError(RuntimeError):
    """tritonserver could not be started or did not become ready; carries its log tail."""


@dataclass(frozen=True)
class TritonInstall:
    binary: Path
    python_backend: Path      # backends/python (libtriton_python.so, triton_python_backend_utils.py)
    stub: Path                # python_backend_stubs/<python version>/triton_python_backend_stub
    libs: Path                # site-packages/nvidia_pytriton.libs


def find_triton() -> TritonInstall:
    """Locate tritonserver and its Python backend inside the installed nvidia-pytriton."""
    try:
        import pytriton
    except ImportError as exc:
        raise TritonError("nvidia-pytriton is not installed (pip install 'speechops[triton]')") from exc
    root = Path(pytriton.__file__).resolve().parent / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    install = TritonInstall(
        binary=root / "bin" / "tritonserver",
        python_backend=root / "backends" / "python",
        stub=root / "python_backend_stubs" / version / "triton_python_backend_stub",
        libs=root.parent.parent / "nvidia_pytriton.libs",
    )
    for path in (install.binary, install.python_backend, install.stub, install.libs):
        if not path.exists():
            raise TritonError(f"nvidia-pytriton install is incomplete: {path} is missing")
    return install


def source_roots() -> list[Path]:
    """Directories that hold the speechops_worker and speechops_contract packages being run now.

    The model stubs must import the same code as this process, not whatever an editable
    install in the base interpreter points at."""
    import speechops_contract
    import speechops_worker
    roots = [Path(speechops_worker.__file__).resolve().parent.parent,
             Path(speechops_contract.__file__).resolve().parent.parent]
    return list(dict.fromkeys(roots))


def build_model_repository(dest_dir: str | Path, models: Iterable[str] | None = None,
                           *, instance_kind: str = "KIND_AUTO", idle_timeout_s: float = 30.0,
                           parameters: dict[str, dict[str, str]] | None = None) -> Path:
    """Write a Triton model repository: per model, config.pbtxt from the operator's builder
    and 1/model.py from this package. Returns the repository path."""
    dest = Path(dest_dir)
    names = list(models) if models is not None else list(MODELS)
    for name in names:
        if name not in MODELS:
            raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
        source = MODELS_DIR / (MODELS[name].code or name) / "1" / "model.py"
        if not source.is_file():
            raise ValueError(f"model {name!r} has no implementation at {source}")
        model_dir = dest / name
        (model_dir / "1").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, model_dir / "1" / "model.py")
        config = model_config.render(name, instance_kind=instance_kind,
                                     idle_timeout_s=idle_timeout_s,
                                     parameters=(parameters or {}).get(name))
        (model_dir / "config.pbtxt").write_text(config)
    return dest


def checked_in_config(name: str) -> str:
    """What models/<name>/config.pbtxt must hold: the builder's output for the
    interactive profile (tests keep them equal; regenerate with write_checked_in_configs)."""
    return model_config.render(name)


def write_checked_in_configs() -> list[Path]:
    written = []
    for name in MODELS:
        path = MODELS_DIR / name / "config.pbtxt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(checked_in_config(name))
        written.append(path)
    return written


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Ports the kernel reports free now (bound together so they differ)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


_LOADING = re.compile(r"loading: (\S+?):\d+")
_LOADED = re.compile(r"successfully loaded '([^']+)'")
_PORT_BUSY = re.compile(r"address already in use|Failed to start|failed to bind", re.IGNORECASE)


class TritonServer:
    """tritonserver as a child process, as a context manager.

        with TritonServer(build_model_repository(tmp)) as triton:
            client = grpcclient.InferenceServerClient(triton.grpc_url)
    """

    def __init__(self, model_repository: str | Path, *, host: str = "127.0.0.1",
                 startup_timeout_s: float = 180.0, stop_timeout_s: float = 15.0,
                 on_progress: ProgressFn | None = None, log_verbose: int = 0,
                 extra_source_roots: Iterable[str | Path] = (), workdir: str | Path | None = None,
                 ports: tuple[int, int, int] | None = None):
        """ports: (http, grpc, metrics) to use; by default free ones are picked at start."""
        self.model_repository = Path(model_repository).resolve()
        self.host = host
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.on_progress = on_progress or (lambda message: None)
        self.log_verbose = log_verbose
        self.extra_source_roots = [Path(p).resolve() for p in extra_source_roots]
        self._workdir_arg = workdir
        self._workdir: Path | None = None
        self._own_workdir = False
        self._proc: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        self._log: collections.deque[str] = collections.deque(maxlen=400)
        self._loaded: set[str] = set()
        self._fixed_ports = ports
        self.http_port = self.grpc_port = self.metrics_port = 0
        self.startup_s: float | None = None

    # -- addresses ---------------------------------------------------------------------
    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(list(self._log)[-lines:])

    def _failure_report(self) -> str:
        """Triton's error lines (they come before its long status tables), then the tail."""
        errors = [line for line in self._log if re.match(r"E\d{4} ", line)]
        return "\n".join(errors[-20:] + ["--- log tail ---", self.log_tail(15)])

    # -- lifecycle -----------------------------------------------------------------------
    def __enter__(self) -> "TritonServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        install = find_triton()
        if self._workdir_arg is not None:
            self._workdir = Path(self._workdir_arg)
            self._workdir.mkdir(parents=True, exist_ok=True)
        else:
            self._workdir = Path(tempfile.mkdtemp(prefix="speechops-triton-"))
            self._own_workdir = True
        backends = self._prepare_backends(install)
        began = time.monotonic()
        self.on_progress("starting tritonserver")
        last_error: TritonError | None = None
        for _attempt in range(3):  # another process may grab a port between pick and bind
            try:
                self._launch(install, backends, began)
                self.startup_s = time.monotonic() - began
                self.on_progress(f"Triton ready in {self.startup_s:.1f} s ({self.grpc_url})")
                return
            except TritonError as exc:
                last_error = exc
                busy = bool(_PORT_BUSY.search(self.log_tail(400)))
                self._terminate()
                if not busy:
                    break
                if self._fixed_ports:  # the same ports may need a moment to be released
                    time.sleep(1.0)
            except BaseException:  # interrupted while waiting: leave nothing running
                self._terminate()
                self._cleanup_workdir()
                raise
        self._cleanup_workdir()
        raise last_error  # type: ignore[misc]

    def stop(self) -> None:
        self._terminate()
        self._cleanup_workdir()

    def kill(self) -> None:
        """SIGKILL tritonserver and its stubs at once, as a crash would (for tests)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()

    def restart(self) -> None:
        """Stop (or reap after kill) and start again on the same ports, so clients reconnect."""
        ports = (self.http_port, self.grpc_port, self.metrics_port)
        self.stop()
        if all(ports):
            self._fixed_ports = ports
        self.start()

    # -- internals -----------------------------------------------------------------------
    def _prepare_backends(self, install: TritonInstall) -> Path:
        """backends/python with the stub for this Python beside it, as tritonserver expects."""
        assert self._workdir is not None
        python_dir = self._workdir / "backends" / "python"
        python_dir.mkdir(parents=True, exist_ok=True)
        for item in install.python_backend.iterdir():
            if item.is_file():
                shutil.copy2(item, python_dir / item.name)
        shutil.copy2(install.stub, python_dir / install.stub.name)
        return self._workdir / "backends"

    def _environment(self, install: TritonInstall) -> dict[str, str]:
        env = dict(os.environ)
        libdirs = [str(install.libs), sysconfig.get_config_var("LIBDIR") or ""]
        if env.get("LD_LIBRARY_PATH"):
            libdirs.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(d for d in libdirs if d)
        roots = [str(p) for p in self.extra_source_roots + source_roots()]
        env[SOURCE_ROOTS_ENV] = os.pathsep.join(dict.fromkeys(roots))
        if sys.prefix != sys.base_prefix:
            env[SITE_DIRS_ENV] = os.pathsep.join(site.getsitepackages())
        return env

    def _launch(self, install: TritonInstall, backends: Path, began: float) -> None:
        self.http_port, self.grpc_port, self.metrics_port = self._fixed_ports or free_ports(3, self.host)
        self._log.clear()
        self._loaded.clear()
        args = [
            str(install.binary),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={backends}",
            f"--http-address={self.host}", f"--http-port={self.http_port}",
            f"--grpc-address={self.host}", f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}", f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            "--disable-auto-complete-config",
            "--exit-on-error=true",
            "--strict-readiness=true",
            f"--exit-timeout-secs={max(1, int(self.stop_timeout_s) - 2)}",
            f"--log-verbose={self.log_verbose}",
            # Parallel servers on one machine must not share the backend's /dev/shm regions.
            f"--backend-config=python,shm-region-prefix-name=speechops{os.getpid()}_{self.grpc_port}_",
        ]
        self._proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=self._environment(install), cwd=self._workdir, start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read_log, args=(self._proc, began),
                                        name="tritonserver-log", daemon=True)
        self._reader.start()
        self._wait_ready()

    def _read_log(self, proc: subprocess.Popen, began: float) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            self._log.append(line)
            if m := _LOADING.search(line):
                self.on_progress(f"loading model {m.group(1)}")
            elif m := _LOADED.search(line):
                self._loaded.add(m.group(1))
                self.on_progress(f"model {m.group(1)} ready ({time.monotonic() - began:.1f} s)")

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout_s
        url = f"http://{self.http_url}/v2/health/ready"
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                if self._reader:
                    self._reader.join(timeout=2)
                raise TritonError(f"tritonserver exited with code {code} during startup:\n{self._failure_report()}")
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.1)
        raise TritonError(f"tritonserver not ready after {self.startup_timeout_s:.0f} s:\n{self._failure_report()}")

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                self._log.append(f"[speechops] tritonserver did not stop in {self.stop_timeout_s:.0f} s; killed")
        # The stubs are in tritonserver's process group; make sure none outlives it.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()
        if self._reader:
            self._reader.join(timeout=2)
            self._reader = None

    def _cleanup_workdir(self) -> None:
        if self._own_workdir and self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
            self._own_workdir = False
