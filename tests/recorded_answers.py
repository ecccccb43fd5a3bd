"""Per-sample answers of the shipped models in the end-to-end job tests, compared with answers recorded in
``tests/recorded/<name>.json``: exact, since the test data are rendered deterministically and the models are
the shipped files (ONNX Runtime's kernels on this kind of CPU; another CPU may round the INT8 edge model's
logits differently, see tests/edge/test_golden_summaries.py).

Re-record after a deliberate change (a retrained model, a new planner rule), and say why in the commit:
    CEPR_RECORD_ANSWERS=1 python -m pytest tests/runner/test_default_job.py tests/runner/test_real_job.py ...
"""

from __future__ import annotations

import json
import os
from pathlib import Path

RECORDED = Path(__file__).resolve().parent / "recorded"


def case_answers(job_dir: Path) -> dict[str, list[list]]:
    """{case: [[index, task, answer, source, truth], ...]} from every case's samples.jsonl under a job folder; a
    case is named by its algorithm and the hyperparameters of its record (its id differs between machines)."""
    out = {}
    for rec_path in sorted(Path(job_dir).rglob("record.json")):
        rec = json.loads(rec_path.read_text())
        hps = {f"{t}.{k}": v for t, m in sorted(rec["modules"].items())
               for k, v in sorted((m.get("hyperparameters") or {}).items())}
        name = rec["algorithm"] + "".join(f" {k}={v}" for k, v in hps.items() if k.startswith("hard_example"))
        lines = [json.loads(x) for x in (rec_path.parent / "samples.jsonl").read_text().splitlines() if x.strip()]
        out[name] = sorted([x["index"], x["task"], x["answer"], x["source"], x["truth"]] for x in lines)
    return out


def _dumps(answers: dict) -> str:
    """One case per key, one sample per line: diffs of a re-recording read sample by sample."""
    cases = [f"  {json.dumps(c)}: [\n" + ",\n".join(f"    {json.dumps(x)}" for x in rows) + "\n  ]"
             for c, rows in sorted(answers.items())]
    return "{\n" + ",\n".join(cases) + "\n}\n"


def check_recorded_answers(job_dir: Path, name: str) -> None:
    """Assert the job's per-sample answers equal ``tests/recorded/<name>.json`` (or write it with
    CEPR_RECORD_ANSWERS=1)."""
    got = case_answers(job_dir)
    assert got, f"no test case under {job_dir}"
    path = RECORDED / f"{name}.json"
    if os.environ.get("CEPR_RECORD_ANSWERS") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(_dumps(got))
        return
    assert path.is_file(), f"{path} is missing: record it with CEPR_RECORD_ANSWERS=1 (see tests/recorded_answers.py)"
    want = json.loads(path.read_text())
    assert sorted(got) == sorted(want), f"cases differ: {sorted(set(got) ^ set(want))}"
    diff = {case: [(w, g) for w, g in zip(want[case], got[case]) if w != g] for case in want}
    diff = {c: d for c, d in diff.items() if d}
    assert not diff, ("per-sample answers differ from the recorded ones ([index, task, answer, source, truth], "
                      f"recorded then now): {json.dumps(diff)[:3000]}")
