"""Names every part agrees on: child objects, labels, ports, metric names.

The operator builds objects with these names, the scaler patches them, the gateway
exports the metrics, and the chart's dashboards and alerts query them.
"""

from __future__ import annotations

from speechops_contract.api import GROUP

# Labels and annotations
LABEL_PIPELINE = f"{GROUP}/pipeline"
LABEL_PROFILE = f"{GROUP}/profile"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "speechops"
# Kubernetes removes pods with the lowest cost first on scale-down: the scaler sets it
# from each pod's live streams so empty pods go first.
POD_DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
ANNOTATION_DRAINING = f"{GROUP}/draining"


def worker_deployment(pipeline: str) -> str:
    return f"{pipeline}-worker"


def reserve_deployment(pipeline: str) -> str:
    return f"{pipeline}-reserve"


def service(pipeline: str) -> str:
    return pipeline


def model_configmap(pipeline: str) -> str:
    return f"{pipeline}-models"


def disruption_budget(pipeline: str) -> str:
    return f"{pipeline}-worker"


# Ports
TRITON_HTTP_PORT = 8000
TRITON_GRPC_PORT = 8001
TRITON_METRICS_PORT = 8002
GATEWAY_PORT = 8080          # WebSocket streams: ws://HOST:8080/v1/stream
GATEWAY_ADMIN_PORT = 9400    # /metrics, /healthz, /readyz, POST /drain

# Gateway metrics (Prometheus). Every series carries labels `namespace` and `pipeline`.
M_ACTIVE_STREAMS = "speechops_active_streams"                # gauge
M_STREAMS_STARTED = "speechops_streams_started_total"        # counter: streams admitted (arrivals)
M_FRAMES = "speechops_frames_total"                          # counter{direction=in|out}
M_BACKLOG = "speechops_frame_backlog"                        # gauge: VAD chunks (512 samples, 32 ms) received, not yet through VAD
M_STAGE_LATENCY = "speechops_stage_latency_seconds"          # histogram{stage}
M_PARTIAL_LATENCY = "speechops_partial_latency_seconds"      # histogram: audio time -> partial sent
M_FINAL_LATENCY = "speechops_final_latency_seconds"          # histogram: end of speech -> final sent
M_JITTER = "speechops_frame_jitter_seconds"                  # histogram: inter-arrival deviation
M_DROPPED_FRAMES = "speechops_dropped_frames_total"          # counter{reason}
M_REJECTED_STREAMS = "speechops_rejected_streams_total"      # counter{reason, kind}
M_DEGRADED_STREAMS = "speechops_degraded_streams"            # gauge{level}
M_DRAINING = "speechops_draining"                            # gauge 0/1
M_STREAM_CAPACITY = "speechops_stream_capacity"              # gauge: streams this replica measured it can hold

# Triton model metrics (exported by the Python-backend models on Triton's :8002).
M_MODEL_STREAMS = "speechops_model_streams"                  # gauge{model}: streams with state in the model
M_MODEL_SWEPT = "speechops_model_swept_streams_total"        # counter{model}: state freed for idleness

# Worker pod environment (the operator sets these; the gateway reads them).
ENV_PIPELINE = "PIPELINE"            # pipeline name
ENV_NAMESPACE = "NAMESPACE"          # pipeline namespace
ENV_PROFILE = "PROFILE"              # latency tier
ENV_PIPELINE_SPEC = "PIPELINE_SPEC"  # JSON: the worker-relevant part of the spec; parse with api.parse_spec
ENV_POD_NAME = "POD_NAME"
ENV_TRITON_GRPC_URL = "TRITON_GRPC_URL"
ENV_API_KEYS = "SPEECHOPS_API_KEYS"  # file or directory of API keys (spec.streams.auth's Secret, mounted)
ENV_TLS_DIR = "SPEECHOPS_TLS_DIR"    # directory holding tls.crt and tls.key (spec.streams.tls's Secret)
API_KEYS_MOUNT = "/etc/speechops/api-keys"
TLS_MOUNT = "/etc/speechops/tls"
M_AUTH_REFUSED = "speechops_auth_refused_total"             # counter{reason}: streams refused for their key
# The operator's admin requests (POST /drain, /undrain; admin_auth.py): the worker reads the
# operator's public key from the pipeline's ConfigMap, mounted; the preStop hook drains
# through a Unix socket only the gateway container can reach.
ENV_ADMIN_PUBLIC_KEYS = "SPEECHOPS_ADMIN_PUBLIC_KEYS"    # file of PEM public keys the gateway trusts
ADMIN_PUBLIC_KEY_ITEM = "operator-admin-key.pub"         # the ConfigMap's data key
ADMIN_PUBLIC_KEY_MOUNT = "/etc/speechops/admin"
ENV_ADMIN_SOCKET = "SPEECHOPS_ADMIN_SOCKET"              # the gateway's Unix socket for in-pod admin
ADMIN_SOCKET = "/tmp/speechops-admin.sock"
M_ADMIN_REFUSED = "speechops_admin_refused_total"       # counter{reason}: POST /drain or /undrain refused (no, a stale or a wrong operator signature)
ENV_ADMIN_KEY_FILE = "SPEECHOPS_ADMIN_KEY_FILE"          # the operator's PEM Ed25519 private key
# Where the worker image keeps the models it ships (used when the spec names no repository).
WORKER_IMAGE_MODELS_PATH = "/opt/speechops/models"

# Operator metrics (Prometheus, served on the operator's --metrics-port). The scaler's
# series carry `namespace` and `pipeline`; the chart's dashboard and alerts query them.
M_OP_FORECAST_STREAMS = "speechops_operator_forecast_streams"      # gauge: demand forecast at now + lead time
M_OP_FORECAST_UPPER = "speechops_operator_forecast_upper_streams"  # gauge: top of the forecast's band at now + lead time
M_OP_BAND_COVERAGE = "speechops_operator_forecast_band_coverage_ratio"  # gauge: share of the last day's outcomes at or below the band's top
M_OP_BAND_TARGET = "speechops_operator_forecast_band_target_ratio"  # gauge: the share the tier's band is meant to cover
M_OP_DESIRED_REPLICAS = "speechops_operator_desired_replicas"      # gauge: workers the scaler asked for
M_OP_READY_REPLICAS = "speechops_operator_ready_replicas"          # gauge: workers ready
M_OP_PLACEHOLDERS = "speechops_operator_placeholder_pods"          # gauge: placeholder pods asked for
M_OP_SPARES = "speechops_operator_spare_replicas"                  # gauge: of desired workers, drained warm spares
M_OP_SCALER_FALLBACKS = "speechops_operator_scaler_fallbacks_total"  # counter{reason}: predictive -> reactive
M_OP_AVAILABILITY_OBJECTIVE = "speechops_operator_availability_objective_ratio"  # gauge: the objective, a share
M_OP_AVAILABILITY = "speechops_operator_availability_ratio"        # gauge: share of stream requests admitted, 30 days
M_OP_BUDGET_REMAINING = "speechops_operator_error_budget_remaining_ratio"  # gauge: share of the 30-day error budget left
M_OP_BURN_RATE = "speechops_operator_error_budget_burn_rate"      # gauge{window=5m|30m|1h|6h}: 1 spends the budget in 30 days
M_OP_HEADROOM_SIGMAS = "speechops_operator_headroom_sigmas"        # gauge: the forecast band's width the budget set
# The reconciler's own health, across pipelines (no pipeline label: bounded cardinality).
M_OP_RECONCILES = "speechops_operator_reconciles_total"            # counter{trigger,result}: reconciles
M_OP_ERRORS = "speechops_operator_errors_total"                    # counter{trigger}: reconciles that failed
M_OP_RECONCILE_DURATION = "speechops_operator_reconcile_duration_seconds"  # histogram{trigger}: time per reconcile
M_OP_CHILD_WRITES = "speechops_operator_child_writes_total"        # counter{reason}: creates, patches, deletes of children
