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
    REPORTED_BY_CLOUD,
    CloudRecord,
    EdgeHandoff,
    EdgeResult,
    EdgeState,
    SampleRecord,
    handoff_key,
)
from cepr.records.sample import SampleRef, as_sample

__all__ = ["CODECS", "SCHEMA", "CaseRecord", "check_case_record", "parse_case_record", "EDGE_HANDOFF", "EDGE_STATE_KEY", "MASK_KEY", "MODES", "REPORTED_BY_CLOUD", "STATUSES",
           "CloudRecord", "CloudRequest", "CloudResult", "EdgeHandoff", "EdgeResult", "EdgeState", "PayloadConfig",
           "SampleRecord", "SampleRef", "Timings", "Usage", "as_sample", "handoff_key"]
