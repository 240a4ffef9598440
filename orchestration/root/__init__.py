"""The root's keeping: one run per root (its lease), which folders are roots (its marker), the settings its local
runs were given, and its ML Metadata store's health."""
