"""Where the shared corpus is (official FHIR examples and schema, Synthea bundles, the trial record): the folder
``$BRIDGE_SHARED``, else ``shared`` beside the checkout. ``scripts/test`` sets ``BRIDGE_SHARED`` when it finds
the folder elsewhere (beside the origin of a local clone)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BRIDGE_SHARED") or REPO.parent / "shared")
FHIR_DATA = SHARED / "fhir-data"
EXAMPLES = FHIR_DATA / "hl7-fhir-r4-examples_via_fhir_models"
SCHEMA = FHIR_DATA / "hl7-fhir-r4-schema" / "fhir.schema.json"
TRIAL = SHARED / "trial"
