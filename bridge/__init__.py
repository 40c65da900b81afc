"""cd7-bridge: a FHIR R4 bridge between a hospital EHR and a CAR-T trial defined as data (``trials/*.yaml``).

The trial a command or the service works on is a ``bridge.trial.Trial`` (``load_trial()``: the shipped
NCT04762485 file by default); its id and ruleset version are asked of it, never of a module constant.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cd7-bridge")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+source"


__all__ = ["__version__"]
