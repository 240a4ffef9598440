"""Getting images into the pipeline: image folders to TFRecord spans, demo data."""
