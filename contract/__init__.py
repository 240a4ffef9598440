"""The data contract every other package reads: feature keys and label names (features.py), and where
stored things live (layout.py). Plain constants and path arithmetic, no heavy imports."""
