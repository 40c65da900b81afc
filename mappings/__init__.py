"""The code tables (YAML), shipped inside the bridge package as ``bridge.mappings`` (read with importlib.resources)."""
