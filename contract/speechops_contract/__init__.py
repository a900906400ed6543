"""What the operator and the worker agree on: the SpeechPipeline types and defaults,
names (labels, ports, metrics), the model catalog, the latency tiers and the log format.

Both sides import this package; it imports neither, nor kopf or the Kubernetes client,
so a worker image installs without them."""
