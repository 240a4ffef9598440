"""The project's own TFX components: thin wrappers around pure functions."""
