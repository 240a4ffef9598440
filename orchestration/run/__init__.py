"""A run's lifecycle around the TFX DAG, the same for every orchestrator, and the serving folder and ML Metadata
kept in agreement."""
