"""Export: source + assessment -> checked packages -> one JSON file per package in a directory.

``assessment_for(items, options, cmap)`` computes the ``bridge assess --format json`` document with the
wiring ``bridge assess`` uses (``bridge.pipeline.assess_loaded``); ``load_assessment(path)`` reads a saved one
instead.
``export(items, assessment, context, kinds)`` builds and checks the packages of the consenting patients
(nothing is written when any package fails a check). ``write_packages(directory, packages)`` writes
``<package id>.json`` atomically and removes package files of earlier exports that this one no longer holds
(a patient who withdrew consent), so the directory holds exactly this export. Nothing here touches the network
or the state store.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.config import RuleOptions
from bridge.errors import InputError, SourceUnreadable
from bridge.model import Item
from bridge.normalize.mappings import CodeMap
from bridge.registry.package import BuildResult, Context, Package, build_packages, check_packages
from bridge.registry.sources import collect_records
from bridge.registry.timepoints import KINDS

if TYPE_CHECKING:
    from bridge.trial import Trial

log = logging.getLogger(__name__)

PACKAGE_FILE = re.compile(r"^[0-9a-f]{32}-[a-z0-9-]+\.json$")

Json = dict[str, Any]


def assessment_for(items: list[Item], options: RuleOptions, cmap: CodeMap, trial: Trial | None = None) -> Json:
    """The assessment document of every infused patient of ``items``, as ``bridge assess`` computes it for
    ``trial`` (None: the shipped default; ``options`` from ``RuleOptions.for_trial``)."""
    from bridge.pipeline import assess_loaded, load_patients  # the assessment engine loads when used

    patients, _report = load_patients(items, cmap)
    run = assess_loaded(patients, options, cmap, trial=trial)
    for failure in run.failures:  # one patient's bug leaves that patient out, never the export
        log.error("assessment failed", extra={"patient": failure.patient, "error": failure.error})
    return run.as_json()


def load_assessment(path: Path) -> Json:
    """A saved ``bridge assess --format json`` document."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise SourceUnreadable(f"{path}: not a readable JSON assessment document") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("patients"), list):
        raise InputError(f"{path}: not a 'bridge assess --format json' document (no 'patients' list)")
    return doc


def export(items: Iterable[Item], assessment: Json, context: Context,
           kinds: Collection[str] = KINDS) -> BuildResult:
    """Checked packages of the consenting patients, and the patients skipped with the reason."""
    result = build_packages(assessment, collect_records(items), context, kinds)
    check_packages(result.packages)
    return result


def _write_atomic(path: Path, doc: Json) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=2, ensure_ascii=False)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_packages(directory: Path, packages: list[Package]) -> list[Path]:
    """Write each package as ``<id>.json``; remove stale package files of earlier exports. Returns the paths."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for p in packages:
            path = directory / f"{p.id}.json"
            _write_atomic(path, p.bundle)
            written.append(path)
        keep = {w.name for w in written}
        for stale in directory.iterdir():
            if PACKAGE_FILE.match(stale.name) and stale.name not in keep:
                stale.unlink()
    except OSError as exc:
        raise InputError(f"cannot write registry packages to {directory}: {exc.strerror}") from None
    return written


__all__ = ["PACKAGE_FILE", "assessment_for", "export", "load_assessment", "write_packages"]
