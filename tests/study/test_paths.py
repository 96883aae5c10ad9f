"""Tests of xtc/study/paths.py: run ids and run folders, as the workflow's rules match them."""
import pytest

from study_fixtures import ANCHOR, tiny_config
from xtc import study


def test_run_ids_round_trip_and_match_the_rules_patterns():
    import re

    cfg = tiny_config()
    runs = study.study_runs(cfg)
    for r in runs.to_dict("records"):
        parsed = study.parse_run_relpath(r["run_id"])
        assert parsed["kind"] == r["kind"]
        if r["kind"] == "student":
            assert {c: parsed[c] for c in study.SETTING_COLS} == {c: r[c] for c in study.SETTING_COLS}
            assert study.run_relpath(parsed) == r["run_id"]
        # the teacher and student rules' wildcard constraints: each run id matches exactly one of them
        own, other = ((study.TEACHER_RUN_RE, study.STUDENT_RUN_RE) if r["kind"] == "teacher"
                      else (study.STUDENT_RUN_RE, study.TEACHER_RUN_RE))
        assert re.fullmatch(own, r["run_id"]) and not re.fullmatch(other, r["run_id"])
    assert study.parse_run_relpath("student/" + ANCHOR)["lr"] == 5e-5
    assert study.metrics_file("runs", "student/" + ANCHOR) == f"runs/student/{ANCHOR}/metrics.json"
    assert study.teacher_dir("runs", "rte") == "runs/teacher/task~rte"
    with pytest.raises(ValueError, match="not a run folder name"):
        study.parse_run_relpath("student/task~sst2/depth~4")
