"""Tests of xtc/study/diagnostics.py: the study's diagnostics table and figure from the runs' recorded
diagnostics."""
import json
import os


def _add_diagnostics(cfg: dict) -> None:
    """Give every fake run (study_fixtures.write_tree) three evaluations with diagnostics as xtc records them: the
    1-bit students flip 1%, 2%, 3% of their query signs and nothing else, and predict one class only."""
    from xtc.study import study_runs

    roles = ("query", "key", "value", "attn_out", "ffn_in", "ffn_out", "word_embeddings")
    for r in study_runs(cfg).to_dict("records"):
        path = os.path.join(cfg["paths"]["runs"], r["run_id"], "metrics.json")
        with open(path) as f:
            rec = json.load(f)
        history = []
        for i in (1, 2, 3):
            d = {"train_sample": 32, "train_metrics": {"accuracy": 0.9}, "gap": 0.9 - 0.6,
                 "predicted_counts": {"dev": {"0": 32, "1": 0} if r["wbits"] == 1 else {"0": 16, "1": 16}}}
            if r["wbits"] < 32:
                d["changed_codes"] = {role: (0.01 * i if role == "query" and r["wbits"] == 1 else 0.0)
                                      for role in roles}
            if i == 1 and r["kd"] != "none":
                d["kd_gradient"] = {"norms": {"logit": 1.0, "hidden": 1.0, "attention": 2.0},
                                    "shares": {"logit": 0.25, "hidden": 0.25, "attention": 0.5}}
            history.append({"stage": "kd", "step": 10 * i, "epoch": float(i), "metrics": {"accuracy": 0.6},
                            "diagnostics": d})
        rec["history"] = history
        with open(path, "w") as f:
            json.dump(rec, f)


def test_study_diagnostics_csv_table_and_figure(tmp_path, capsys):
    import pandas as pd

    from study_fixtures import base_score, tiny_config, write_tree
    from xtc import study
    from xtc.cli import main

    cfg = tiny_config(tmp_path)
    write_tree(cfg, base_score)
    _add_diagnostics(cfg)
    cfg_file = tmp_path / "study.yaml"
    cfg_file.write_text(study.dump_config(cfg))
    res, figs = tmp_path / "results", tmp_path / "figures"
    assert main(["study", "diagnostics", "--config", str(cfg_file), "--runs-dir", cfg["paths"]["runs"],
                 "--out-csv", str(res / "diagnostics.csv"), "--out-md", str(res / "tables" / "diagnostics.md"),
                 "--figures-dir", str(figs)]) == 0
    assert sorted(os.listdir(figs)) == ["flip_share.pdf", "flip_share.png"]
    diag = pd.read_csv(res / "diagnostics.csv", keep_default_na=False, na_values=[""])
    assert list(diag.columns) == study.DIAGNOSTICS_COLUMNS
    plan = study.study_runs(cfg)
    assert set(diag["run_id"]) == set(plan["run_id"])
    quant = diag[diag["wbits"] < 32]
    assert len(quant) == 3 * 7 * int((plan["wbits"] < 32).sum())  # evaluations x roles x quantized runs
    teacher = diag[diag["kind"] == "teacher"]
    assert len(teacher) == 3 * (plan["kind"] == "teacher").sum() and teacher["changed_share"].isna().all()
    q1 = diag[(diag["wbits"] == 1) & (diag["role"] == "query")]
    assert sorted(set(q1["changed_share"].round(6))) == [0.01, 0.02, 0.03]
    assert (diag["gap"].round(6) == 0.3).all()
    assert (diag.loc[diag["wbits"] == 1, "top_class_share"] == 1.0).all()
    assert (diag.loc[diag["wbits"] == 2, "top_class_share"] == 0.5).all()
    with_kd = diag[diag["kd"] != "none"]
    assert (with_kd["kd_attention_share"] == 0.5).all() and diag.loc[diag["kd"] == "none", "kd_logit_share"].isna().all()
    table = (res / "tables" / "diagnostics.md").read_text()
    assert table.startswith("# Diagnostics at the last evaluation")
    # the anchor (1-bit, full depth): encoder share = mean over the six Linear roles = 0.03 / 6 at step 30
    anchor = next(line for line in table.splitlines() if line.startswith("| SST-2 | 4 | 1 | one-stage | 3 | 5e-05 | off"))
    assert "| 0.005 | 0.000 | 0.900 | 0.600 | 0.300 | 1.000 | 0.25 / 0.25 / 0.50 |" in anchor
