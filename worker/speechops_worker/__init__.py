"""speechops worker: the streaming gateway and the Triton model repository."""

__version__ = "0.1.0"
