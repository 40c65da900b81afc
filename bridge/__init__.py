"""cd7-bridge: a FHIR R4 bridge between a hospital EHR and the CD7 CAR-T trial NCT04762485."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cd7-bridge")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+source"

STUDY_ID = "NCT04762485"
RULESET_VERSION = "NCT04762485-rules/2026-11"

__all__ = ["RULESET_VERSION", "STUDY_ID", "__version__"]
