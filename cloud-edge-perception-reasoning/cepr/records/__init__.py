"""The records that pass between the stages, and nothing above them: what the dataset processor hands the edge
(``SampleRef``), what the edge returns and hands the cloud (``EdgeResult``, ``EdgeState``), what the cloud is asked
and answers (``CloudRequest``, ``PayloadConfig``, ``CloudResult``, ``CloudRecord``), and one line of
``samples.jsonl`` (``SampleRecord``), and one test case's ``record.json`` (``CaseRecord``, typed and versioned). This package imports only :mod:`cepr.errors` and :mod:`cepr.data`'s layout
helpers, so every layer above may use it (docs/architecture.md)."""

from cepr.records.case import SCHEMA, CaseRecord, check_case_record, parse_case_record
from cepr.records.cloud import STATUSES, CloudRequest, CloudResult, Timings, Usage
from cepr.records.payload import CODECS, MODES, PayloadConfig
from cepr.records.results import (
    EDGE_HANDOFF,
    EDGE_STATE_KEY,
    MASK_KEY,
    PAYLOAD_PRICER,
    REPORTED_BY_CLOUD,
    CloudRecord,
    EdgeHandoff,
    EdgeResult,
    EdgeState,
    PayloadPricer,
    SampleRecord,
    handoff_key,
    part_bytes,
)
from cepr.records.sample import SampleRef, as_sample

__all__ = [
    "CODECS",
    "EDGE_HANDOFF",
    "EDGE_STATE_KEY",
    "MASK_KEY",
    "MODES",
    "PAYLOAD_PRICER",
    "REPORTED_BY_CLOUD",
    "SCHEMA",
    "STATUSES",
    "CaseRecord",
    "CloudRecord",
    "CloudRequest",
    "CloudResult",
    "EdgeHandoff",
    "EdgeResult",
    "EdgeState",
    "PayloadConfig",
    "PayloadPricer",
    "SampleRecord",
    "SampleRef",
    "Timings",
    "Usage",
    "as_sample",
    "check_case_record",
    "handoff_key",
    "parse_case_record",
    "part_bytes",
]
