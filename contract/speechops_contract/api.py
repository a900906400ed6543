"""The SpeechPipeline API: typed spec, defaults, and validation with clear errors.

`crds/speechpipeline.yaml` is what the API server enforces; this module is what the
operator, the scaler, `speechops plan` and `speechops up` read. Both carry the same
defaults (a test keeps them in step). Validation here repeats the CRD's rules because
an API server may not enforce them all (old servers ignore CEL, KMock enforces nothing),
and adds what a schema cannot say (dependency cycles, quantities).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from speechops_contract.catalog import runs_whisper
from speechops_contract.profiles import profile as _tier


GROUP = "speechops.dev"
VERSION = "v1alpha1"
KIND = "SpeechPipeline"
PLURAL = "speechpipelines"
API_VERSION = f"{GROUP}/{VERSION}"

PROFILES = ("realtime", "interactive", "batch")
SCALING_MODES = ("predictive", "reactive", "fixed")
RESERVE_MODES = ("auto", "fixed", "none")


_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# Kubernetes resource quantities (the API server's own grammar, less the rarely used
# exponent forms it also accepts): a number with an optional binary or decimal suffix.
_QUANTITY_RE = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")


class SpecError(ValueError):
    """One or more problems in a SpeechPipeline spec, each naming its field."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{path}: {msg}" for path, msg in problems))


def parse_duration(text: str | int | float) -> float:
    """'500ms', '180s', '5m', '1h30m', '14d', '2w' -> seconds. Bare numbers are seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"duration must not be negative, got {text}")
        return float(text)
    if not isinstance(text, str) or not text:
        raise ValueError(f"expected a duration like '30s', got {text!r}")
    pos, total = 0, 0.0
    for match in _DURATION_RE.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text):
        raise ValueError(f"expected a duration like '500ms', '30s', '5m', '1h30m', '14d', got {text!r}")
    return total


@dataclass(frozen=True)
class WhisperModel:
    """The CTranslate2 Whisper model a whisper_asr stage runs (and its fallback model).
    At most one source: a PersistentVolumeClaim, an image an init container copies
    from, or a directory already in the Triton container; none is the packaged tiny.en."""
    pvc_claim_name: str | None = None
    pvc_sub_path: str | None = None
    image: str | None = None
    image_path: str = "/model"
    path: str | None = None
    # Multilingual models: the spoken language ("" = detect per utterance) and the task.
    language: str = ""
    task: str = "transcribe"


@dataclass(frozen=True)
class Stage:
    name: str
    model: str
    version: str = "1"
    depends_on: tuple[str, ...] = ()
    fallback_model: str | None = None
    # An optional stage may be skipped under overload (graceful degradation).
    optional: bool = False
    options: Mapping[str, str] = field(default_factory=dict)
    whisper: WhisperModel | None = None


@dataclass(frozen=True)
class ModelRepository:
    # Exactly one source: a PersistentVolumeClaim, or an image whose `path` an init
    # container copies into an emptyDir.
    pvc_claim_name: str | None = None
    pvc_sub_path: str | None = None
    image: str | None = None
    image_path: str = "/models"


@dataclass(frozen=True)
class Worker:
    # The worker image is Triton plus every package the models import; a stock Triton
    # image cannot load them.
    triton_image: str = "ghcr.io/speechops/worker:0.1.0"
    gateway_image: str = "ghcr.io/speechops/worker:0.1.0"
    model_repository: ModelRepository = ModelRepository()
    gpus_per_pod: int = 1
    # Kubernetes ResourceRequirements dicts, passed through after quantity checks.
    triton_resources: Mapping[str, Any] = field(default_factory=dict)
    gateway_resources: Mapping[str, Any] = field(default_factory=dict)
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    affinity: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Capacity:
    streams_per_replica: int = 64
    min_replicas: int = 1
    max_replicas: int = 10
    target_utilization: float = 0.8


@dataclass(frozen=True)
class Scaling:
    mode: str = "predictive"
    lead_time: float = 180.0          # seconds
    history: float = 14 * 86400.0     # seconds
    scale_down_delay: float = 60.0    # seconds
    scale_down_max_percent: int = 50  # of the period's highest replicas, removed within the period at most
    scale_down_period: float = 600.0  # seconds
    # Availability objective, percent of demanded stream-minutes that find ready capacity
    # (live: of stream requests admitted) over 30 days; None: the tier's (profiles).
    availability: float | None = None
    # Decide, record and explain every tick, but write nothing to Deployments or pods:
    # the scaler's recommendations beside whatever scales the workers today.
    dry_run: bool = False
    prometheus_url: str = "http://prometheus-operated.monitoring.svc:9090"
    # PromQL overrides; empty means the scaler's built-in query. `$pipeline` and
    # `$namespace` are substituted.
    queries: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Reserve:
    mode: str = "auto"   # auto: sized from forecast uncertainty; fixed: `count`; none
    count: int = 0


@dataclass(frozen=True)
class Streams:
    sample_rate: int = 16000
    max_duration: float = 3600.0
    idle_timeout: float = 30.0
    context_window: float = 30.0
    drain_timeout: float = 120.0
    partial_interval: float = 0.5
    auth_secret: str | None = None    # Secret of API keys; None: streams need no key
    tls_secret: str | None = None     # kubernetes.io/tls Secret; None: plain ws://


@dataclass(frozen=True)
class PipelineSpec:
    profile: str = "interactive"
    stages: tuple[Stage, ...] = ()
    worker: Worker = Worker()
    capacity: Capacity = Capacity()
    scaling: Scaling = Scaling()
    reserve: Reserve = Reserve()
    streams: Streams = Streams()

    @property
    def availability(self) -> float:
        """The availability objective as a share (0.999): the spec's, else its tier's."""
        if self.scaling.availability is not None:
            return self.scaling.availability / 100.0
        return _tier(self.profile).availability

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)


DEFAULT_STAGES = (
    Stage(name="vad", model="silero_vad"),
    Stage(name="asr", model="whisper_asr", depends_on=("vad",)),
)


class _Reader:
    """Walks a raw spec dict, collecting every problem instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[tuple[str, str]] = []

    def fail(self, path: str, msg: str) -> None:
        self.problems.append((path, msg))

    def mapping(self, raw: Any, path: str) -> Mapping[str, Any]:
        if raw is None:
            return {}
        if not isinstance(raw, Mapping):
            self.fail(path, f"must be an object, got {type(raw).__name__}")
            return {}
        return raw

    def integer(self, raw: Mapping, key: str, path: str, default: int, lo: int, hi: int | None = None) -> int:
        value = raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(f"{path}.{key}", f"must be an integer, got {value!r}")
            return default
        if value < lo or (hi is not None and value > hi):
            bound = f">= {lo}" if hi is None else f"between {lo} and {hi}"
            self.fail(f"{path}.{key}", f"must be {bound}, got {value}")
            return default
        return value

    def number(self, raw: Mapping, key: str, path: str, default: float, lo: float, hi: float) -> float:
        value = raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(f"{path}.{key}", f"must be a number, got {value!r}")
            return default
        if not lo < value <= hi:
            self.fail(f"{path}.{key}", f"must be in ({lo}, {hi}], got {value}")
            return default
        return float(value)

    def duration(self, raw: Mapping, key: str, path: str, default: float, minimum: float = 0.0) -> float:
        if key not in raw:
            return default
        try:
            seconds = parse_duration(raw[key])
        except ValueError as exc:
            self.fail(f"{path}.{key}", str(exc))
            return default
        if seconds < minimum:
            self.fail(f"{path}.{key}", f"must be at least {minimum:g}s, got {raw[key]!r}")
            return default
        return seconds

    def boolean(self, raw: Mapping, key: str, path: str, default: bool) -> bool:
        value = raw.get(key, default)
        if not isinstance(value, bool):
            self.fail(f"{path}.{key}", f"must be true or false, got {value!r}")
            return default
        return value

    def choice(self, raw: Mapping, key: str, path: str, default: str, allowed: tuple[str, ...]) -> str:
        value = raw.get(key, default)
        if value not in allowed:
            self.fail(f"{path}.{key}", f"must be one of {', '.join(allowed)}, got {value!r}")
            return default
        return value

    def string(self, raw: Mapping, key: str, path: str, default: str | None) -> str | None:
        value = raw.get(key, default)
        if value is not None and (not isinstance(value, str) or not value):
            self.fail(f"{path}.{key}", f"must be a non-empty string, got {value!r}")
            return default
        return value

    def secret_name(self, raw: Mapping, key: str, path: str) -> str | None:
        """`{secretName: NAME}` -> NAME, a DNS subdomain (what Secret names are)."""
        if raw.get(key) is None:
            return None
        section = self.mapping(raw[key], f"{path}.{key}")
        name = self.string(section, "secretName", f"{path}.{key}", None)
        if name is None:
            if "secretName" not in section:
                self.fail(f"{path}.{key}.secretName", "is required")
            return None
        if len(name) > 253 or not all(_NAME_RE.match(part) for part in name.split(".")):
            self.fail(f"{path}.{key}.secretName", f"must be a Secret name (lowercase DNS subdomain), got {name!r}")
            return None
        return name

    def resources(self, raw: Any, path: str) -> Mapping[str, Any]:
        raw = self.mapping(raw, path)
        for section in ("requests", "limits"):
            for name, qty in self.mapping(raw.get(section), f"{path}.{section}").items():
                if not _QUANTITY_RE.match(str(qty)) or str(qty).startswith("-"):
                    self.fail(f"{path}.{section}.{name}", f"is not a valid quantity: {qty!r}")
        return dict(raw)


def _read_stages(r: _Reader, raw: Any) -> tuple[Stage, ...]:
    if raw is None:
        return DEFAULT_STAGES
    if not isinstance(raw, list) or not raw:
        r.fail("spec.stages", "must be a non-empty list of stages")
        return ()
    stages: list[Stage] = []
    for i, item in enumerate(raw):
        path = f"spec.stages[{i}]"
        item = r.mapping(item, path)
        name = r.string(item, "name", path, None)
        model = r.string(item, "model", path, None)
        if name is None:
            r.fail(f"{path}.name", "is required")
        elif not _NAME_RE.match(name) or len(name) > 63:
            r.fail(f"{path}.name", f"must be a DNS label (lowercase letters, digits, '-'), got {name!r}")
        if model is None:
            r.fail(f"{path}.model", "is required")
        deps = item.get("dependsOn", [])
        if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
            r.fail(f"{path}.dependsOn", "must be a list of stage names")
            deps = []
        options = r.mapping(item.get("options"), f"{path}.options")
        for key in sorted(set(options) & _MODEL_OPTIONS_MOVED):
            r.fail(f"{path}.options.{key}", f"is set through {path}.whisper (pvc, image or path, language, task)")
        whisper = _read_whisper(r, item, path, model)
        version = item.get("version", "1")
        stages.append(Stage(
            name=name or f"stage-{i}",
            model=model or "",
            version=str(version),
            depends_on=tuple(deps),
            fallback_model=r.string(item, "fallbackModel", path, None),
            optional=bool(item.get("optional", False)),
            options={str(k): str(v) for k, v in options.items()},
            whisper=whisper,
        ))
    _check_stage_graph(r, stages)
    _check_whisper_models(r, stages)
    return tuple(stages)


# Model parameters a pipeline sets through `whisper`, not `options`.
_MODEL_OPTIONS_MOVED = {"model_path", "language", "task"}
_LANGUAGE_RE = re.compile(r"^[a-z]{2,3}$|^haw$|^yue$")


def _read_whisper(r: _Reader, item: Mapping, path: str, model: str | None) -> WhisperModel | None:
    if item.get("whisper") is None:
        return None
    path = f"{path}.whisper"
    raw = r.mapping(item.get("whisper"), path)
    if model is not None and not runs_whisper(model):
        r.fail(path, f"is only for Whisper stages (model whisper_asr or its variants), not {model!r}")
    pvc = r.mapping(raw.get("pvc"), f"{path}.pvc")
    img = r.mapping(raw.get("image"), f"{path}.image")
    local = r.string(raw, "path", path, None)
    if sum(raw.get(key) is not None for key in ("pvc", "image", "path")) > 1:
        r.fail(path, "set one of pvc, image or path, not several")
    if raw.get("pvc") is not None and not pvc.get("claimName"):
        r.fail(f"{path}.pvc.claimName", "is required")
    if raw.get("image") is not None and not img.get("image"):
        r.fail(f"{path}.image.image", "is required")
    for key, value in (("path", local), ("image.path", img.get("path"))):
        if value is not None and not str(value).startswith("/"):
            r.fail(f"{path}.{key}", f"must be an absolute path, got {value!r}")
    language = raw.get("language") or ""      # empty: detect per utterance
    if language and (not isinstance(language, str) or not _LANGUAGE_RE.match(language)):
        r.fail(f"{path}.language", f"must be a Whisper language code such as en, de, fr, ja (or empty to detect), "
                                   f"got {language!r}")
    task = r.choice(raw, "task", path, "transcribe", ("transcribe", "translate"))
    return WhisperModel(
        pvc_claim_name=pvc.get("claimName") or None, pvc_sub_path=pvc.get("subPath") or None,
        image=img.get("image") or None, image_path=str(img.get("path", "/model")),
        path=local, language=language, task=task)


def _check_whisper_models(r: _Reader, stages: list[Stage]) -> None:
    """One Triton model has one configuration: stages running the same Whisper model
    (or fallback) must ask for the same weights."""
    seen: dict[str, tuple[int, WhisperModel | None]] = {}
    for i, stage in enumerate(stages):
        for model in (stage.model, stage.fallback_model):
            if not model:
                continue
            if model in seen and seen[model][1] != stage.whisper and (stage.whisper or seen[model][1]):
                r.fail(f"spec.stages[{i}].whisper",
                       f"differs from spec.stages[{seen[model][0]}]'s, which runs {model} too; "
                       "one model name serves one Whisper model")
            seen.setdefault(model, (i, stage.whisper))


def _check_stage_graph(r: _Reader, stages: list[Stage]) -> None:
    index: dict[str, int] = {}
    for i, stage in enumerate(stages):
        if stage.name in index:
            r.fail(f"spec.stages[{i}].name", f"duplicate stage name {stage.name!r} (also spec.stages[{index[stage.name]}])")
        index.setdefault(stage.name, i)
    for i, stage in enumerate(stages):
        for j, dep in enumerate(stage.depends_on):
            if dep not in index:
                r.fail(f"spec.stages[{i}].dependsOn[{j}]", f"names unknown stage {dep!r}")
            elif dep == stage.name:
                r.fail(f"spec.stages[{i}].dependsOn[{j}]", "a stage cannot depend on itself")
    cycle = find_cycle({s.name: [d for d in s.depends_on if d in index and d != s.name] for s in stages})
    if cycle:
        r.fail("spec.stages", f"dependency cycle: {' -> '.join(cycle)}")


def find_cycle(graph: Mapping[str, list[str]]) -> list[str] | None:
    """Returns one cycle as [a, b, ..., a], or None if the graph is acyclic."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in graph:
        if node not in state and (found := visit(node)):
            return found
    return None


def stage_waves(stages: tuple[Stage, ...]) -> list[list[str]]:
    """Stages grouped in waves: every stage of a wave depends only on earlier waves,
    so the stages inside one wave run concurrently."""
    done: set[str] = set()
    waves: list[list[str]] = []
    remaining = list(stages)
    while remaining:
        wave = [s.name for s in remaining if set(s.depends_on) <= done]
        if not wave:
            raise SpecError([("spec.stages", "dependency cycle")])
        waves.append(wave)
        done.update(wave)
        remaining = [s for s in remaining if s.name not in done]
    return waves


def parse_spec(raw: Mapping[str, Any] | None) -> PipelineSpec:
    """A raw `spec` dict (as stored in the API server) -> PipelineSpec with defaults.

    Raises SpecError listing every problem, each with its field path."""
    r = _Reader()
    raw = r.mapping(raw, "spec")

    profile = r.choice(raw, "profile", "spec", "interactive", PROFILES)
    stages = _read_stages(r, raw.get("stages"))

    w = r.mapping(raw.get("worker"), "spec.worker")
    repo_raw = r.mapping(w.get("modelRepository"), "spec.worker.modelRepository")
    pvc = r.mapping(repo_raw.get("pvc"), "spec.worker.modelRepository.pvc")
    img = r.mapping(repo_raw.get("image"), "spec.worker.modelRepository.image")
    if pvc and img:
        r.fail("spec.worker.modelRepository", "set either pvc or image, not both")
    if pvc and not pvc.get("claimName"):
        r.fail("spec.worker.modelRepository.pvc.claimName", "is required")
    if img and not img.get("image"):
        r.fail("spec.worker.modelRepository.image.image", "is required")
    repo = ModelRepository(
        pvc_claim_name=pvc.get("claimName"),
        pvc_sub_path=pvc.get("subPath"),
        image=img.get("image"),
        image_path=img.get("path", "/models"),
    )
    tolerations = w.get("tolerations", [])
    if not isinstance(tolerations, list):
        r.fail("spec.worker.tolerations", "must be a list")
        tolerations = []
    defaults = Worker()
    worker = Worker(
        triton_image=r.string(w, "tritonImage", "spec.worker", defaults.triton_image),
        gateway_image=r.string(w, "gatewayImage", "spec.worker", defaults.gateway_image),
        model_repository=repo,
        gpus_per_pod=r.integer(w, "gpusPerPod", "spec.worker", 1, 0, 16),
        triton_resources=r.resources(r.mapping(w.get("resources"), "spec.worker.resources").get("triton"),
                                     "spec.worker.resources.triton"),
        gateway_resources=r.resources(r.mapping(w.get("resources"), "spec.worker.resources").get("gateway"),
                                      "spec.worker.resources.gateway"),
        node_selector={str(k): str(v) for k, v in r.mapping(w.get("nodeSelector"), "spec.worker.nodeSelector").items()},
        tolerations=tuple(tolerations),
        affinity=dict(r.mapping(w.get("affinity"), "spec.worker.affinity")),
    )

    c = r.mapping(raw.get("capacity"), "spec.capacity")
    capacity = Capacity(
        streams_per_replica=r.integer(c, "streamsPerReplica", "spec.capacity", 64, 1, 100_000),
        min_replicas=r.integer(c, "minReplicas", "spec.capacity", 1, 0, 10_000),
        max_replicas=r.integer(c, "maxReplicas", "spec.capacity", 10, 1, 10_000),
        target_utilization=r.number(c, "targetUtilization", "spec.capacity", 0.8, 0.0, 1.0),
    )
    if capacity.min_replicas > capacity.max_replicas:
        r.fail("spec.capacity.minReplicas",
               f"must be <= maxReplicas ({capacity.min_replicas} > {capacity.max_replicas})")

    s = r.mapping(raw.get("scaling"), "spec.scaling")
    queries = r.mapping(s.get("queries"), "spec.scaling.queries")
    scaling = Scaling(
        mode=r.choice(s, "mode", "spec.scaling", Scaling.mode, SCALING_MODES),
        lead_time=r.duration(s, "leadTime", "spec.scaling", Scaling.lead_time),
        history=r.duration(s, "history", "spec.scaling", Scaling.history, minimum=3600.0),
        scale_down_delay=r.duration(s, "scaleDownDelay", "spec.scaling", Scaling.scale_down_delay),
        scale_down_max_percent=r.integer(s, "scaleDownMaxPercent", "spec.scaling", Scaling.scale_down_max_percent,
                                         1, 100),
        scale_down_period=r.duration(s, "scaleDownPeriod", "spec.scaling", Scaling.scale_down_period),
        availability=(None if s.get("availability") is None
                      else r.number(s, "availability", "spec.scaling", 99.9, 50.0, 99.9999)),
        dry_run=r.boolean(s, "dryRun", "spec.scaling", Scaling.dry_run),
        prometheus_url=r.string(s, "prometheusUrl", "spec.scaling", Scaling().prometheus_url),
        queries={str(k): str(v) for k, v in queries.items()},
    )

    rv = r.mapping(raw.get("reserve"), "spec.reserve")
    reserve = Reserve(
        mode=r.choice(rv, "mode", "spec.reserve", "auto", RESERVE_MODES),
        count=r.integer(rv, "count", "spec.reserve", 0, 0, 1000),
    )

    st = r.mapping(raw.get("streams"), "spec.streams")
    streams = Streams(
        sample_rate=r.choice(st, "sampleRate", "spec.streams", 16000, (8000, 16000, 48000)),
        max_duration=r.duration(st, "maxDuration", "spec.streams", 3600.0, minimum=1.0),
        idle_timeout=r.duration(st, "idleTimeout", "spec.streams", 30.0, minimum=0.1),
        context_window=r.duration(st, "contextWindow", "spec.streams", 30.0, minimum=1.0),
        drain_timeout=r.duration(st, "drainTimeout", "spec.streams", 120.0),
        partial_interval=r.duration(st, "partialInterval", "spec.streams", 0.5, minimum=0.05),
        auth_secret=r.secret_name(st, "auth", "spec.streams"),
        tls_secret=r.secret_name(st, "tls", "spec.streams"),
    )
    if streams.context_window > 30.0:
        r.fail("spec.streams.contextWindow", "must be at most 30s (Whisper's input window)")

    if r.problems:
        raise SpecError(r.problems)
    return PipelineSpec(profile=profile, stages=stages, worker=worker, capacity=capacity,
                        scaling=scaling, reserve=reserve, streams=streams)

