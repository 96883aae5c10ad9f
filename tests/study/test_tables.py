"""Tests of xtc/study/tables.py: the axis tables (cells, half-widths, footers) and the reproduction table (a fresh
summary.csv against a committed reference, cell by cell)."""
import math
import os

import pandas as pd
import pytest
from scipy import stats

from study_fixtures import ANCHOR, base_score, tiny_config, write_tree
from xtc import study
from xtc.study.tables import reproduction_markdown, reproduction_table, write_reproduction


def summary(rows):
    cols = ["config_id", "kind", "task", "metric", "mean", "std", "n"]
    return pd.DataFrame([dict(zip(cols, r)) for r in rows], columns=cols)


REF = summary([
    ("teacher/task~mrpc", "teacher", "mrpc", "score", 0.85, float("nan"), 1),
    ("student/a", "student", "mrpc", "score", 0.80, 0.01, 3),
    ("student/b", "student", "stsb", "score", 0.70, 0.02, 3),
    ("student/c", "student", "stsb", "score", 0.60, 0.02, 3),
    ("student/d", "student", "stsb", "score", 0.50, 0.02, 3),
    ("student/b", "student", "stsb", "pearson", 0.71, 0.02, 3),  # not a score: not compared by default
])


def test_cells_are_classified_against_the_references_interval():
    half = 100 * stats.t.ppf(0.975, 2) * 0.02 / math.sqrt(3)  # 4.97 points
    fresh = summary([
        ("teacher/task~mrpc", "teacher", "mrpc", "score", 0.85, float("nan"), 1),  # same seed: identical
        ("student/a", "student", "mrpc", "score", 0.80, 0.012, 3),                 # identical mean
        ("student/b", "student", "stsb", "score", 0.70 + 0.9 * half / 100, 0.02, 3),  # just inside the CI
        ("student/c", "student", "stsb", "score", 0.60 + 1.1 * half / 100, 0.02, 3),  # just outside it
        ("student/e", "student", "stsb", "score", 0.40, 0.02, 3),                   # new configuration
    ])
    t = reproduction_table(REF, fresh).set_index("config_id")
    assert list(t["status"]) == ["identical", "identical", "within CI", "outside CI", "missing in fresh",
                                 "not in reference"]
    assert t.loc["student/b", "ref_ci_high"] - 70 == pytest.approx(half)
    assert t.loc["student/b", "diff"] == pytest.approx(0.9 * half)
    assert bool(t.loc["student/b", "within_ci"]) and not bool(t.loc["student/c", "within_ci"])
    # the prediction interval for a fresh mean of 3 seeds is sqrt(2) wider: 1.1 x half is inside it
    assert t.loc["student/c", "pi_high"] - 60 == pytest.approx(half * math.sqrt(2))
    assert bool(t.loc["student/c", "within_pi"])
    assert t.loc["teacher/task~mrpc", "within_ci"] is None  # one run: no interval
    md = reproduction_markdown(t.reset_index())
    assert "Cells: 1 outside CI, 1 missing in fresh, 1 not in reference, 1 within CI, 2 identical (of 6)." in md
    body = [ln for ln in md.splitlines() if ln.startswith("| `")]
    assert body[0].startswith("| `student/c`")  # what needs explaining comes first


def test_a_single_run_that_moved_is_flagged():
    fresh = REF.copy()
    fresh.loc[0, "mean"] = 0.86
    t = reproduction_table(REF, fresh).set_index("config_id")
    assert t.loc["teacher/task~mrpc", "status"] == "differs (n=1, no CI)"
    assert t.loc["teacher/task~mrpc", "diff"] == pytest.approx(1.0)


def test_write_reproduction_is_byte_identical(tmp_path):
    for d in ("ref", "new"):
        (tmp_path / d).mkdir()
        REF.to_csv(tmp_path / d / "summary.csv", index=False)
    outs = []
    for i in range(2):
        write_reproduction(str(tmp_path / "ref"), str(tmp_path / "new"), str(tmp_path / f"r{i}.csv"),
                           str(tmp_path / f"r{i}.md"))
        outs.append(((tmp_path / f"r{i}.csv").read_bytes(), (tmp_path / f"r{i}.md").read_bytes()))
    assert outs[0] == outs[1]
    assert set(pd.read_csv(tmp_path / "r0.csv")["status"]) == {"identical"}


def test_bad_folders_name_the_problem_and_write_nothing(tmp_path):
    (tmp_path / "ref").mkdir()
    REF.to_csv(tmp_path / "ref" / "summary.csv", index=False)
    out_csv, out_md = tmp_path / "out" / "r.csv", tmp_path / "out" / "r.md"
    with pytest.raises(FileNotFoundError, match="no summary.csv in the fresh folder"):
        write_reproduction(str(tmp_path / "ref"), str(tmp_path / "nowhere"), str(out_csv), str(out_md))
    (tmp_path / "bad").mkdir()
    pd.DataFrame({"a": [1]}).to_csv(tmp_path / "bad" / "summary.csv", index=False)
    with pytest.raises(ValueError, match="not a study summary"):
        write_reproduction(str(tmp_path / "bad"), str(tmp_path / "ref"), str(out_csv), str(out_md))
    assert not (tmp_path / "out").exists()


def test_cell_without_any_run_is_a_dash_and_figures_are_written(tmp_path):
    cfg = tiny_config(tmp_path, seeds=(1,))
    gone = "student/" + ANCHOR.replace("wbits~1", "wbits~2").replace("epochs~3", "epochs~1")
    root = write_tree(cfg, base_score, skip={gone}, benchmark=False)
    study.write_results(cfg, root, cfg["paths"]["results"], allow_incomplete=True)
    runs, missing = study.read_results(cfg["paths"]["results"])
    table = study.axis_table(cfg, "budget", runs, missing)
    assert "| 2 | short (1 ep) | — | 65.4 | — |" in table and f"`{gone}`" in table
    assert runs["wall_s"].isna().all()  # no benchmark files: NaN, not an error
    paths = study.make_figures(cfg, runs, cfg["paths"]["figures"])
    assert sorted(os.path.basename(p) for p in paths) == sorted(
        f"{n}.{e}" for n in study.FIGURES for e in ("png", "pdf"))
    for p in paths:
        with open(p, "rb") as f:
            head = f.read(8)
        assert head.startswith(b"\x89PNG") if p.endswith(".png") else head.startswith(b"%PDF")


def test_table_half_widths_and_the_teachers_distance_to_its_reference():
    from scipy.stats import t

    from xtc.study.tables import ci_half_width, teacher_text

    assert ci_half_width(2.0, 4) == pytest.approx(t.ppf(0.975, 3) * 2.0 / 2)
    assert math.isnan(ci_half_width(2.0, 1)) and math.isnan(ci_half_width(float("nan"), 3))
    cfg = tiny_config()
    cfg["teacher"]["reference"] = {"sst2": 0.92}  # the full-data fine-tune (schema key: teacher.reference)
    teacher = {"sst2": {"score": 90.0, "m_accuracy": 90.0}, "rte": {"score": 70.0, "m_accuracy": 70.0}}
    text = teacher_text(cfg, teacher, ["sst2", "rte"])
    assert "SST-2 90.0, RTE 70.0; Avg 80.0." in text and "(teacher.reference): SST-2 -2.0." in text
    # the reference is scored on whole dev sets: a profile that scores a subset says so beside the distance
    cfg["data"]["max_eval_samples"] = None
    assert "two subsets" not in teacher_text(cfg, teacher, ["sst2", "rte"])
    cfg["data"]["max_eval_samples"] = 400
    assert "first 400 dev examples of each task: the distance mixes two subsets" in teacher_text(cfg, teacher,
                                                                                                 ["sst2", "rte"])


def test_table_footers_say_what_the_fp32_rows_ran(tmp_path):
    from xtc.study.tables import axis_table

    cfg = tiny_config(tmp_path, seeds=(1,))
    write_tree(cfg, base_score)
    runs, missing = study.collect(cfg, cfg["paths"]["runs"])
    depth = axis_table(cfg, "depth", runs, missing)
    assert "A bits 32" in depth and "A bits 8" not in depth  # fp32 rows: no activation quantization
    assert "budget reduce (3/4 ep)" in depth and "budget long" not in depth  # step-1 runs: the reduce budget
    xtc = axis_table(cfg, "xtc", runs, missing)
    assert "A bits 8 for W1 rows, 32 for fp32 rows" in xtc and "budget long (3 ep) for W1 rows, reduce" in xtc
