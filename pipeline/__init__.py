"""The pipeline definition (pipeline.py) and its one configuration (config.py)."""
