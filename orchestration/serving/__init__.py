"""Serving operations on a root's pushed versions: the KServe InferenceService and its rollout, and rollback."""
