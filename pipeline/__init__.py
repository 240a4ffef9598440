"""The pipeline definition: create_pipeline, the blessing rule and the curated schema."""

import pathlib

# The curated schema ImportSchemaGen reads; here, not in pipeline.pipeline, so that a process that only copies it
# (the Kubeflow ingest task) does not import TFX's whole DSL.
SCHEMA_PATH = str(pathlib.Path(__file__).parent / "schema" / "schema.pbtxt")
