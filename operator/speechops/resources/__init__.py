"""Pure builders: a SpeechPipeline spec -> the Kubernetes manifests it needs."""
