"""cd7-bridge: a FHIR R4 bridge between a hospital EHR and a CAR-T trial defined as data (``trials/*.yaml``).

``STUDY_ID`` and ``RULESET_VERSION`` are the shipped default trial's id and ruleset version, read from its file on
first use (``bridge.trial.load_trial``); code that handles another trial asks its ``Trial`` instead.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cd7-bridge")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+source"


def __getattr__(name: str) -> str:
    """The default trial's ``STUDY_ID`` / ``RULESET_VERSION``, derived from the trial file, not written here."""
    if name in ("STUDY_ID", "RULESET_VERSION"):
        from bridge.trial import load_trial  # lazily: importing bridge must not read the trial file

        trial = load_trial()
        return trial.id if name == "STUDY_ID" else trial.ruleset_version
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["RULESET_VERSION", "STUDY_ID", "__version__"]  # noqa: F822 - the first two come from __getattr__
