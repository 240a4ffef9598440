"""The pipeline definition: create_pipeline, the blessing rule and the curated schema."""
