"""Names from the YAML files become folders: ``{workspace}/{job name}/{algorithm name}/{case id}``. Names that
would leave the workspace or split into several folders are refused before anything is written."""

import pytest
import yaml

from cepr.errors import CeprError
from cepr.runner.config import parse_job
from cepr.runner.names import check_path_name, path_name_problem

GOOD = ["edge-only", "cloud-only", "cepr-default", "Oracle (upper bound)", "threshold_0.5", "v1.2 run", "ñandú"]
BAD = ["", "   ", ".", "..", "../../etc", "/tmp/x", "a/b", "a\\b", "x\x00y", "tab\there", "c:x", "what?", " lead",
       "trail ", "dot.", "-rf", "CON", "nul.txt", "x" * 129]


@pytest.mark.parametrize("name", GOOD)
def test_ordinary_names_pass_unchanged(name):
    assert path_name_problem(name) is None and check_path_name(name, "algorithm name") == name


@pytest.mark.parametrize("name", BAD)
def test_names_that_are_not_one_harmless_folder_are_refused(name):
    assert path_name_problem(name)
    with pytest.raises(CeprError, match="algorithm name .* becomes a folder name in the workspace"):
        check_path_name(name, "algorithm name", "job.yaml")


@pytest.mark.parametrize("where", ["job", "algorithm"])
def test_parse_job_refuses_a_name_that_escapes_the_workspace(tiny_job, tmp_path, where):
    path = tiny_job()
    doc = yaml.safe_load(path.read_text())
    evil = "../../outside"
    if where == "job":
        doc["benchmarkingjob"]["name"] = evil
    else:
        doc["benchmarkingjob"]["test_object"]["algorithms"][0]["name"] = evil
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(CeprError, match=r"job.yaml: (benchmarkingjob|algorithm) name '\.\./\.\./outside'"):
        parse_job(path)
    assert not (tmp_path / "ws").exists()
    doc = yaml.safe_load(path.read_text())
    doc["benchmarkingjob"]["name"] = "tiny"
    doc["benchmarkingjob"]["test_object"]["algorithms"][0]["name"] = "tinyalgo"
    path.write_text(yaml.safe_dump(doc))
    assert parse_job(path).name == "tiny"  # the same job with plain names parses
