"""``record.json``: one test case, typed and versioned. The runner keeps a case's record as a dict while the
case runs (every stage adds what it knows) and writes it only through :func:`cepr.runner.case.write_record`,
which validates it against :class:`CaseRecord`; ``--resume`` and the report read it back through
:func:`parse_case_record`, which accepts the records of earlier versions that it can read and refuses the rest
with a message that says what to do.

Version history: 1, records written before the version field existed (the same fields); 2, ``schema`` added.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from cepr.errors import CeprError

SCHEMA = 2  # the version this cepr writes
READABLE = (1, 2)  # the versions it reads
STATUSES = ("running", "ok", "failed", "interrupted")


class CaseRecord(BaseModel):
    """The fields every record has (``status``, ``id``, ``algorithm``, ``modules``, ``output_dir``) and the ones a
    finished case adds; a module's own ``save()`` may add more (kept as they are)."""

    model_config = ConfigDict(extra="allow")

    schema_version: int = SCHEMA
    status: Literal["running", "ok", "failed", "interrupted"]
    id: str
    algorithm: str
    algorithm_file: str | None = None
    paradigm: str | None = None
    modules: dict[str, dict]
    hyperparameters: dict[str, Any] | None = None
    fingerprints: dict[str, Any] | None = None
    output_dir: str
    url: str | None = None
    job: str | None = None
    job_file: str | None = None
    testenv: dict[str, Any] | None = None
    limit: int | None = None
    concurrency: int | None = None
    versions: dict[str, Any] | None = None
    git: dict[str, Any] | None = None
    started: str | None = None
    finished: str | None = None
    seconds: float | None = None
    wall_s: float | None = None
    samples: int | None = None
    n_ok: int | None = None
    n_failed: int | None = None
    failed_samples: list[dict] | None = None
    metrics: dict[str, float | str | None] | None = None
    metric_errors: dict[str, str] | None = None
    cloud: dict[str, Any] | None = None
    degraded: bool | None = None
    upper_bound: bool | None = None
    edge_providers: list[str] | None = None
    resources: dict[str, Any] | None = None
    cloud_server: dict[str, Any] | None = None
    cluster: dict[str, Any] | None = None
    error: str | None = None
    traceback: str | None = None


def _problem(e: ValidationError) -> str:
    err = e.errors()[0]
    where = ".".join(str(x) for x in err.get("loc", ())) or "the record"
    return f"{where}: {err.get('msg', 'invalid')}"


def check_case_record(doc: dict) -> dict:
    """``doc`` with ``schema_version`` set, after checking it against :class:`CaseRecord` (a CeprError naming
    the first bad field otherwise: a bug in whatever built the record)."""
    out = {"schema_version": SCHEMA, **doc}
    try:
        CaseRecord.model_validate(out)
    except ValidationError as e:
        raise CeprError(f"record.json of test case {doc.get('id', '?')} is malformed: {_problem(e)}") from None
    return out


def parse_case_record(doc: dict, where: str = "record.json") -> dict:
    """A record read back from disk, checked: an earlier version this cepr reads is accepted (and marked with
    its version), a newer or unreadable one is a CeprError that says what to do."""
    if not isinstance(doc, dict):
        raise CeprError(f"{where} is not a test case record (a JSON object): delete it, or run into a new workspace")
    version = doc.get("schema_version", 1)
    if not isinstance(version, int) or version not in READABLE:
        newer = isinstance(version, int) and version > SCHEMA
        raise CeprError(f"{where} has record version {version!r}; this cepr reads versions "
                        f"{', '.join(map(str, READABLE))}"
                        + (": it was written by a newer cepr (upgrade cepr, or run into a new workspace)" if newer
                           else ": delete it, or run into a new workspace (--workspace DIR)"))
    try:
        CaseRecord.model_validate(doc)
    except ValidationError as e:
        raise CeprError(f"{where} is not a readable test case record ({_problem(e)}): delete it, or run into a new "
                        "workspace (--workspace DIR)") from None
    return {**doc, "schema_version": version}
