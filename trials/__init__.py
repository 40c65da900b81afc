"""The trial definition files (YAML), shipped inside the bridge package as ``bridge.trials`` (read with importlib.resources)."""
