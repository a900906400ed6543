"""speechops: a Kubernetes operator for low-latency streaming speech inference."""

__version__ = "0.1.0"
