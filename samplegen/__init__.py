"""The synthetic FHIR data generators (development only; not part of the ``cd7-bridge`` wheel).

- ``samplegen.prescreen`` writes ``samples/prescreen/`` (the pre-screen cases and their intended verdicts);
- ``samplegen.treated`` writes ``samples/treated/`` (the treated cohort and its intended assessment);
- ``samplegen.population`` writes a large Bulk Data export for the population benchmark (under /tmp).

Each runs as ``python -m samplegen.<name>`` from the repository root, and tests import them as modules (pytest
runs from the root). They share ``samplegen.kit`` (code systems, codings, validation, the file layout) and
build every resource with one chart builder, ``samplegen.chart.Chart``.
"""
