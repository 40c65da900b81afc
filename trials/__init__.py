"""The trial definition files (YAML), shipped in the bridge package as ``bridge.trials`` (importlib.resources)."""
