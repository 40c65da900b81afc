"""JSON Schemas and the bridge's own code lists, shipped inside the bridge package as ``bridge.profiles``."""
