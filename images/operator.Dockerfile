# speechops operator image: `speechops run` (kopf) and nothing else.
#
#   docker build -f images/operator.Dockerfile -t speechops/operator:0.1.0 .
#
# Bases are pinned by version tag. For reproducible production builds pin them by
# digest as well, so a re-pushed tag cannot change what you ship:
#   docker buildx imagetools inspect python:3.11.11-slim-bookworm   # prints the digest
#   FROM python:3.11.11-slim-bookworm@sha256:<digest> AS build
# and pass the same digest to the runtime stage (ARG PYTHON_IMAGE below).
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# --- build: install the project and its operator dependencies into a venv ---------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/speechops/venv
ENV PATH=/opt/speechops/venv/bin:$PATH
WORKDIR /src
# Dependencies first, so a code change does not reinstall them (layer cache).
COPY pyproject.toml README.md ./
COPY contract/ contract/
COPY operator/ operator/
COPY worker/ worker/
# The operator extra only: kopf, kubernetes, prometheus clients and numpy, never torch
# or Triton.
RUN pip install ".[operator]" && python -c "import speechops.cli, kopf"

# --- runtime: the venv on a slim base, non-root, read-only friendly ----------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="speechops-operator" \
      org.opencontainers.image.description="speechops Kubernetes operator (kopf)" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/speechops/venv /opt/speechops/venv
ENV PATH=/opt/speechops/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# A fixed numeric uid/gid so Kubernetes can verify runAsNonRoot without /etc/passwd.
RUN groupadd --system --gid 10001 speechops \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin speechops
USER 10001:10001
# kopf's liveness endpoint and the operator's metrics (see the chart's values).
EXPOSE 8080 9300
ENTRYPOINT ["speechops"]
CMD ["run", "-A"]
