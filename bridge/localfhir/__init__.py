"""The local state store as the bridge's own FHIR server: what the commands write is recorded where ``/fhir``
serves it (issue #14 item 2).

The service's worker has always recorded what it published in the store's published index
(``bridge.state.published``); ``/fhir`` serves that index. This package makes the commands do the same:

* **without an EHR** (``bridge prescreen --save``, ``bridge assess --save``): ``record.LocalRecorder`` builds
  exactly the resources a publication would write — the ResearchStudy (``publish.study.research_study``), one
  ResearchSubject per patient the publication policy allows (``publish.subject.research_subject``,
  ``publish.policy.select``), response Observations and AdverseEvents (``publish.outcomes``), the subject's
  lifecycle status, and a Provenance for each new version (``publish.provenance``) — validates them
  (``publish.validate``) and records them under stable local ids (``local_id``);
* **with an EHR** (every ``--publish``): ``remote.RecordingClient`` keeps every successful write the publisher
  makes (create, update, conditional update, the entries of a transaction) and ``remote.record_publication``
  records what the EHR answered — its ids and version ids, its body when it sent one — under the same keys;
  a resource the publisher left unchanged and the index does not hold at that version is read back once.

Keys (``record_key``) are those the worker uses: ``ResearchStudy|<id>``, ``<Type>|<system>|<value>`` of the
resource's first identifier (ResearchSubject, Observation, AdverseEvent), ``Provenance|<id>``. A key holds one
current resource; the index keeps every version of each ``Type/id`` (a changed body is the next version, an
unchanged one none). A resource an EHR returned is never overwritten by a local build (``kept``): the EHR's
copy is what was published.
"""

from bridge.localfhir.record import LocalPublication, LocalRecorder, Recorded, local_id, record_key

__all__ = ["LocalPublication", "LocalRecorder", "Recorded", "local_id", "record_key"]
