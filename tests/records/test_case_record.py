"""record.json's model: what it requires, what it keeps, which versions it reads."""

from __future__ import annotations

import pytest

from cepr.errors import CeprError
from cepr.records import SCHEMA, check_case_record, parse_case_record

GOOD = {"status": "ok", "id": "abc123", "algorithm": "threshold", "modules": {"edgemodel": {"name": "E"}},
        "output_dir": "/ws/job/threshold/abc123", "metrics": {"accuracy": 0.8, "dataset": "synth/640x480"},
        "samples": 3, "router_model": "kept as it is"}


def test_a_record_is_checked_and_stamped_with_its_version():
    out = check_case_record(GOOD)
    assert out["schema_version"] == SCHEMA and out["router_model"] == "kept as it is"  # a module's own key
    with pytest.raises(CeprError, match="record.json of test case abc123 is malformed: status"):
        check_case_record({**GOOD, "status": "done"})
    with pytest.raises(CeprError, match="is malformed: output_dir"):
        check_case_record({k: v for k, v in GOOD.items() if k != "output_dir"})
    with pytest.raises(CeprError, match="is malformed: samples"):
        check_case_record({**GOOD, "samples": "three"})


@pytest.mark.parametrize("doc, message", [
    ({**GOOD, "schema_version": SCHEMA + 1}, "written by a newer cepr"),
    ({**GOOD, "schema_version": 0}, "delete it, or run into a new workspace"),
    (["not", "a", "record"], "not a test case record"),
    ({**GOOD, "metrics": "accuracy 0.8"}, "not a readable test case record \\(metrics"),
])
def test_records_this_cepr_cannot_read_are_refused_with_what_to_do(doc, message):
    with pytest.raises(CeprError, match=message):
        parse_case_record(doc, "ws/record.json")


def test_a_version_1_record_reads_as_version_1():
    assert parse_case_record(dict(GOOD))["schema_version"] == 1
    assert parse_case_record({**GOOD, "schema_version": SCHEMA})["schema_version"] == SCHEMA
