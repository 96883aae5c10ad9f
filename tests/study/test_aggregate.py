"""Tests of xtc/study/aggregate.py: task scores, aggregation of a study's run folders."""
import json
import math
import os

import pandas as pd
import pytest

from study_fixtures import ANCHOR, base_score, tiny_config, write_tree
from xtc import study


@pytest.mark.parametrize("task, metrics, score", [
    ("mrpc", {"accuracy": 0.60, "f1": 0.80}, 0.70),
    ("qqp", {"accuracy": 0.90, "f1": 0.50}, 0.70),
    ("stsb", {"pearson": 0.90, "spearman": 0.70}, 0.80),
    ("mnli", {"accuracy": 0.80, "accuracy_mm": 0.60}, 0.70),
    ("cola", {"mcc": 0.30, "accuracy": 0.90}, 0.30),  # CoLA is scored by MCC alone
])
def test_task_score_averages_all_of_its_metrics(task, metrics, score):
    """Bug: a task score that takes only the first (or one) of its GLUE metrics."""
    from xtc.study.aggregate import task_score

    assert task_score(task, metrics) == pytest.approx(score, abs=1e-12)
    assert task_score(task, {k: v for k, v in list(metrics.items())[:1]}) is None or task == "cola"


def test_aggregation_with_a_missing_run(tmp_path):
    cfg = tiny_config(tmp_path)
    missing_id = "student/" + ANCHOR.replace("seed~1", "seed~2").replace("task~sst2", "task~rte")
    root = write_tree(cfg, base_score, skip={missing_id})
    with pytest.raises(study.IncompleteStudyError, match=r"1 planned runs have no results.*--allow-incomplete"):
        study.write_results(cfg, root, cfg["paths"]["results"])
    assert not os.path.exists(cfg["paths"]["results"])  # nothing written
    res = study.write_results(cfg, root, cfg["paths"]["results"], allow_incomplete=True)
    runs, summary, missing = res["runs"], res["summary"], res["missing"]
    # runs.csv: tidy, one row per run and metric (accuracy + the derived GLUE score), settings as columns
    for col in ("task", "depth", "wbits", "abits", "kd", "epochs", "lr", "da", "init", "seed", "metric", "value",
                "wall_s", "max_rss_mb", "fp32_bytes", "quantized_bytes", "packed_bytes", "axes"):
        assert col in runs.columns
    n_runs = len(study.study_runs(cfg))
    assert runs["run_id"].nunique() == n_runs - 1
    assert set(runs["metric"]) == {"accuracy", "score"}
    assert (runs["wall_s"] == 12.5).all() and (runs["max_rss_mb"] == 850.0).all()
    q = runs[(runs["wbits"] == 1) & (runs["depth"] == 4)].iloc[0]
    assert q["packed_bytes"] == 200_000 and q["size_source"] == "packed" and q["ratio_to_teacher"] == 20.0
    t = runs[runs["kind"] == "teacher"].iloc[0]
    assert t["fp32_bytes"] == 4_000_000 and t["ratio_to_teacher"] == 1.0
    # the missing run is listed with its reason (only once: its export is not expected separately)
    assert list(missing["run_id"]) == [missing_id]
    assert missing["reason"].iloc[0] == "not run (no metrics.json)"
    # summary: mean, std (ddof=1) and n over seeds; the incomplete configuration has n=1 of 2
    s = summary[(summary["config_id"] == study.config_key("student/" + ANCHOR)) & (summary["metric"] == "accuracy")]
    assert s["n"].iloc[0] == 2 and s["n_planned"].iloc[0] == 2 and bool(s["complete"].iloc[0])
    assert s["mean"].iloc[0] == pytest.approx(0.89)
    assert s["std"].iloc[0] == pytest.approx(math.sqrt(2) * 0.001) and s["std_ddof"].iloc[0] == 1
    inc = summary[(summary["config_id"] == study.config_key(missing_id)) & (summary["metric"] == "accuracy")]
    assert inc["n"].iloc[0] == 1 and not bool(inc["complete"].iloc[0]) and math.isnan(inc["std"].iloc[0])
    # tables: the incomplete cell is marked and the missing run is listed in the footnote
    runs2, missing2 = study.read_results(cfg["paths"]["results"])
    paths = study.write_tables(cfg, runs2, missing2, os.path.join(cfg["paths"]["results"], "tables"))
    assert [os.path.basename(p) for p in paths] == [f"{a['name']}.md" for a in cfg["axes"]]
    kd = open(os.path.join(cfg["paths"]["results"], "tables", "kd.md")).read()
    assert "†" in kd and f"`{missing_id}`" in kd and "| teacher (fp32, 4 layers) | 90.0 | 70.0 | 80.0 |" in kd
    # ± is the 95% t half-width over seeds: scores 88.9 and 89.1 -> t(0.975, 1) * 0.1414 / sqrt(2) = 1.27
    assert "| one-stage | 89.0 ±1.3 | 68.9† |" in kd
    assert "Teacher: fp32, 4 layers, one fine-tuning run per task" in kd and "SST-2 90.0, RTE 70.0; Avg 80.0." in kd
    depth = open(os.path.join(cfg["paths"]["results"], "tables", "depth.md")).read()
    assert "Every planned run of this table finished." in depth


def test_aggregation_of_an_empty_tree_lists_everything_as_missing(tmp_path):
    cfg = tiny_config(tmp_path)
    res = study.write_results(cfg, str(tmp_path / "nothing"), cfg["paths"]["results"], allow_incomplete=True)
    assert res["runs"].empty and len(res["missing"]) == len(study.study_runs(cfg))
    claims = study.check_claims(cfg, res["runs"], res["missing"])
    assert set(claims["verdict"]) == {"inconclusive"}
    assert sorted(set(claims["finding"])) == [1, 2, 3, 4, 5]


def test_read_results_keeps_empty_and_numeric_looking_text_columns_as_text(tmp_path):
    """runs.csv written by pandas loses the type of text columns: an empty budget reads back as NaN and a
    single teacher layer as a number; read_results restores both as text."""
    from xtc.study.aggregate import MISSING_COLUMNS, RUNS_COLUMNS

    cols = {c: ["a", "b"] for c in RUNS_COLUMNS}
    cols.update(budget=["", "short"], teacher_layers=["", "5"], size_source=["", "packed"], value=[0.5, 0.25])
    pd.DataFrame(cols).to_csv(tmp_path / "runs.csv", index=False)
    runs, missing = study.read_results(str(tmp_path))
    assert runs["budget"].tolist() == ["", "short"] and runs["teacher_layers"].tolist() == ["", "5"]
    assert runs["size_source"].tolist() == ["", "packed"] and runs["value"].tolist() == [0.5, 0.25]
    assert list(missing.columns) == MISSING_COLUMNS and len(missing) == 0  # no missing.csv: none missing
    pd.DataFrame({c: ["x"] for c in MISSING_COLUMNS}).to_csv(tmp_path / "missing.csv", index=False)
    assert study.read_results(str(tmp_path))[1]["reason"].tolist() == ["x"]


@pytest.mark.parametrize("value", [None, "0.9", float("nan")])
def test_task_score_is_none_for_a_missing_text_or_nan_metric(value):
    from xtc.study.aggregate import task_score

    assert task_score("sst2", {"accuracy": value}) is None
    assert task_score("sst2", {}) is None
    assert task_score("mrpc", {"accuracy": 0.5, "f1": value}) is None


def test_each_kind_of_missing_run_gets_its_reason_and_folder(tmp_path):
    cfg = tiny_config(tmp_path, seeds=(1,))
    root = write_tree(cfg, base_score)
    plan = study.study_runs(cfg).to_dict("records")
    students = [r for r in plan if r["kind"] == "student" and r["wbits"] < 32]
    unfinished, unreadable, other_task, no_export, emptied = students[:5]
    for r in (unfinished, unreadable, other_task, emptied):
        os.unlink(os.path.join(root, r["run_id"], "metrics.json"))
    os.makedirs(os.path.join(root, unfinished["run_id"], study.STATE_DIR))
    open(os.path.join(root, unreadable["run_id"], "metrics.json"), "w").write("{broken")
    json.dump({"task": "cola", "metrics": {}}, open(os.path.join(root, other_task["run_id"], "metrics.json"), "w"))
    os.unlink(study.size_file(root, study.run_key(no_export)))
    runs, missing = study.collect(cfg, root)
    got = {r["run_id"]: (r["reason"], r["run_dir"]) for r in missing.to_dict("records")}
    d = lambda r: os.path.join(root, r["run_id"])  # noqa: E731
    assert got[unfinished["run_id"]] == ("unfinished (resume state present)", d(unfinished))
    assert got[unreadable["run_id"]][0].startswith("unreadable metrics.json: Expecting property name")
    assert got[unreadable["run_id"]][1] == d(unreadable)
    assert got[other_task["run_id"]] == (f"unreadable metrics.json: metrics.json is for task 'cola', not "
                                         f"'{other_task['task']}'", d(other_task))
    assert got[no_export["run_id"]] == ("no export (packed size unknown)",
                                        os.path.dirname(study.size_file(root, study.run_key(no_export))))
    assert got[emptied["run_id"]] == ("not run (no metrics.json)", d(emptied))  # a folder alone is not a start
    assert len(got) == 5 and list(missing.columns) == study.aggregate.MISSING_COLUMNS
    # the runs after an unreadable one are still read
    assert set(runs["run_id"]) == {r["run_id"] for r in plan} - {unfinished["run_id"], unreadable["run_id"],
                                                                  other_task["run_id"], emptied["run_id"]}


def test_benchmark_files_without_a_usable_time_give_nan(tmp_path):
    from xtc.study.aggregate import read_benchmark

    p = tmp_path / "b.tsv"
    p.write_text("s\tmax_rss\nbad\t100\n")
    got = read_benchmark(str(p))
    assert math.isnan(got["wall_s"]) and got["max_rss_mb"] == 100.0
    p.write_text("h:m:s\tmax_rss\n0:00:01\t5\n7\n")  # no "s" column; a short row is skipped
    got = read_benchmark(str(p))
    assert math.isnan(got["wall_s"]) and got["max_rss_mb"] == 5.0
    p.write_text("s\n1.0\n3.0\n")
    assert read_benchmark(str(p))["wall_s"] == 2.0 and math.isnan(read_benchmark(str(p))["max_rss_mb"])
    assert read_benchmark(str(tmp_path / "absent.tsv")) == {}
    p.write_text("s\n")  # a header without rows
    assert read_benchmark(str(p)) == {}


def test_a_runs_row_carries_every_recorded_field(tmp_path):
    cfg = tiny_config(tmp_path, seeds=(1,))
    root = write_tree(cfg, base_score)
    runs, _ = study.collect(cfg, root)
    s = runs[(runs["depth"] == 2) & (runs["wbits"] == 1) & (runs["metric"] == "accuracy")].iloc[0]
    assert s["teacher_layers"] == "1,3" and s["train_wall_s"] == 1.5 and s["train_tokens_per_s"] == 100.0
    assert s["wall_s"] == 12.5 and s["max_rss_mb"] == 850.0 and s["run_dir"] == os.path.join(root, s["run_id"])
    assert (s["fp32_bytes"], s["quantized_bytes"], s["teacher_fp32_bytes"]) == (2_000_000, 2_000_000 // 30, 4_000_000)
    assert (s["packed_bytes"], s["packed_file_bytes"]) == (100_000, 101_000) and bool(s["is_selection_metric"])
    score = runs[(runs["run_id"] == s["run_id"]) & (runs["metric"] == "score")].iloc[0]
    assert not bool(score["is_selection_metric"])
    full = runs[(runs["kind"] == "student") & (runs["depth"] == 4)].iloc[0]
    assert full["teacher_layers"] == ""  # no layer list: the student kept every teacher layer
    assert (runs.loc[runs["kind"] == "teacher", "teacher_layers"] == "").all()
    assert list(runs.columns) == study.aggregate.RUNS_COLUMNS


def test_results_files_and_the_incomplete_study_message(tmp_path):
    cfg = tiny_config(tmp_path, seeds=(1,))
    plan = study.study_runs(cfg)
    gone = set(plan["run_id"][:5])
    root = write_tree(cfg, base_score, skip=gone)
    with pytest.raises(study.IncompleteStudyError) as e:
        study.write_results(cfg, root, cfg["paths"]["results"])
    assert str(e.value).startswith("5 planned runs have no results") and str(e.value).count("(not run") == 3
    assert str(e.value).count("(no metrics.json)); ") == 3  # three examples, each followed by "; "
    study.write_results(cfg, root, cfg["paths"]["results"], allow_incomplete=True)
    for name in ("runs.csv", "summary.csv", "missing.csv"):  # no index column
        head = open(os.path.join(cfg["paths"]["results"], name)).readline()
        assert head.startswith({"runs.csv": "run_id,", "summary.csv": "config_id,", "missing.csv": "run_id,"}[name])
    summary = pd.read_csv(os.path.join(cfg["paths"]["results"], "summary.csv"))
    assert summary["n_planned"].dtype.kind == "i" and summary["n"].dtype.kind == "i"  # counts, not 2.0
    empty = study.aggregate.summarize(cfg, pd.DataFrame(columns=study.aggregate.RUNS_COLUMNS))
    assert len(empty) == 0 and list(empty.columns)[:3] == ["config_id", "kind", "axes"] and "n_planned" in empty


def test_runs_csv_reads_the_selection_the_final_checkpoint_and_the_training_size(tmp_path):
    cfg = tiny_config(tmp_path, seeds=(1,))
    root = write_tree(cfg, base_score)
    anchor = os.path.join(root, "student", ANCHOR)
    rec = json.load(open(os.path.join(anchor, "metrics.json")))
    rec.update(selected_by="validation", best_step=20, final_step=30, final_metrics={"accuracy": 0.5},
               validation_metrics={"accuracy": 0.8}, data={"train": {"n": 32, "how": "stratified"}})
    json.dump(rec, open(os.path.join(anchor, "metrics.json"), "w"))
    json.dump({"task": "sst2", "labels": [0, 1, 1], "selected": [1, 1, 1], "final": [0, 1, 1]},
              open(os.path.join(anchor, "dev_predictions.json"), "w"))
    runs, _ = study.collect(cfg, root)
    new = runs[(runs["run_id"] == "student/" + ANCHOR) & (runs["metric"] == "score")].iloc[0]
    assert (new["selected_by"], new["best_step"], new["final_step"]) == ("validation", 20, 30)
    assert (new["final_value"], new["validation_value"], new["train_examples"]) == (0.5, 0.8, 32)
    assert new["collapsed"] == True  # noqa: E712  (one class for every dev example)
    old = runs[(runs["run_id"] != "student/" + ANCHOR) & (runs["metric"] == "score")]
    assert (old["selected_by"] == "dev").all() and old["final_value"].isna().all()  # older records
    assert old["collapsed"].isna().all()  # no predictions: unknown, not "not collapsed"
    summary = study.summarize(cfg, runs)
    cell = summary[(summary["config_id"] == "student/" + ANCHOR.rsplit("/seed~", 1)[0])
                   & (summary["metric"] == "score")].iloc[0]
    assert cell["n_collapsed"] == 1 and cell["final_mean"] == 0.5 and cell["selected_by"] == "validation"
