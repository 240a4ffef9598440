"""One runner per orchestrator: the local run, the Kubeflow package and its tasks, Vertex AI, the compiled package
they share, and scheduled local runs."""
