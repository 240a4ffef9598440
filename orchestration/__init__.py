"""Running the pipeline, in four parts, each importing only those listed before it.

- root: the root's keeping: its lease (one run per root, whoever starts it), its marker and the rule
  for an earlier version's root, the settings its local runs were given, its ML Metadata store's health;
- run: the steps of a run around the TFX DAG, written once for every orchestrator, and the serving
  folder reconciled with ML Metadata;
- serving: the cluster's KServe InferenceService and its rollout, and rollback;
- engines: one runner per orchestrator (local, Kubeflow and its tasks, Vertex AI), the compiled
  package they share, and scheduled local runs (cron).
"""
