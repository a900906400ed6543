"""Names every part agrees on: child objects, labels, ports, metric names.

The operator builds objects with these names, the scaler patches them, the gateway
exports the metrics, and the chart's dashboards and alerts query them.
"""

from __future__ import annotations

from speechops.api import GROUP

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
M_FRAMES = "speechops_frames_total"                          # counter{direction=in|out}
M_BACKLOG = "speechops_frame_backlog"                        # gauge: frames queued, not yet sent to Triton
M_STAGE_LATENCY = "speechops_stage_latency_seconds"          # histogram{stage}
M_PARTIAL_LATENCY = "speechops_partial_latency_seconds"      # histogram: audio time -> partial sent
M_FINAL_LATENCY = "speechops_final_latency_seconds"          # histogram: end of speech -> final sent
M_JITTER = "speechops_frame_jitter_seconds"                  # histogram: inter-arrival deviation
M_DROPPED_FRAMES = "speechops_dropped_frames_total"          # counter{reason}
M_REJECTED_STREAMS = "speechops_rejected_streams_total"      # counter{reason}
M_DEGRADED_STREAMS = "speechops_degraded_streams"            # gauge{level}
M_DRAINING = "speechops_draining"                            # gauge 0/1

# Triton model metrics (exported by the Python-backend models on Triton's :8002).
M_MODEL_STREAMS = "speechops_model_streams"                  # gauge{model}: streams with state in the model
M_MODEL_SWEPT = "speechops_model_swept_streams_total"        # counter{model}: state freed for idleness
