"""Tests of xtc/study/cli.py: the `xtc study` commands on a synthetic run tree."""
import json
import os

import pandas as pd

from study_fixtures import ANCHOR, _metrics, base_score, tiny_config, write_tree
from xtc import study
from xtc.study.curves import CURVES_COLUMNS


def test_cli_study_all_on_a_partial_tree(tmp_path, capsys):
    import yaml

    from xtc.cli import main

    cfg = tiny_config(tmp_path, seeds=(1,))
    write_tree(cfg, base_score, skip={"teacher/task~rte"})
    cfg_file = tmp_path / "study.yaml"
    cfg_file.write_text(study.dump_config(cfg))
    assert yaml.safe_load(cfg_file.read_text())["anchor"]["da"] == "off"
    out = tmp_path / "out"
    args = ["study", "all", "--config", str(cfg_file), "--runs-dir", cfg["paths"]["runs"],
            "--results-dir", str(out / "results"), "--figures-dir", str(out / "figures")]
    assert main(args) == 2  # a missing run is an error unless the study may be incomplete ...
    err = capsys.readouterr().err
    assert "teacher/task~rte (not run (no metrics.json))" in err and "--allow-incomplete" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()  # ... one line, nothing written
    assert main(args + ["--allow-incomplete"]) == 0
    assert json.loads(capsys.readouterr().out)["missing"] == 1
    claims = pd.read_csv(out / "results" / "claims.csv")
    assert set(claims["verdict"]) <= set(study.VERDICTS) and sorted(set(claims["finding"])) == [1, 2, 3, 4, 5]
    assert (out / "figures" / "size.pdf").exists()
    assert list(pd.read_csv(out / "results" / "learning_curves.csv").columns) == CURVES_COLUMNS
    assert (out / "results" / "tables" / "learning_curves.md").exists()
    assert main(["study", "plan", "--config", str(cfg_file)]) == 0
    assert json.loads(capsys.readouterr().out)["runs"] == {"teachers": 2, "students": 20}


def _add_history(cfg: dict, score_of) -> None:
    """Give every fake run an evaluation history (as xtc writes it): one evaluation per epoch, the score
    rising towards the run's final one."""
    for r in study.study_runs(cfg).to_dict("records"):
        path = os.path.join(cfg["paths"]["runs"], r["run_id"], "metrics.json")
        if not os.path.exists(path):
            continue
        with open(path) as f:
            rec = json.load(f)
        epochs = max(1, int(r["epochs"]))
        rec["history"] = [{"stage": "kd", "step": 10 * e, "epoch": float(e),
                           "metrics": _metrics(r["task"], score_of(r) - 0.02 * (epochs - e))}
                          for e in range(1, epochs + 1)]
        with open(path, "w") as f:
            json.dump(rec, f)


def test_cli_study_commands_write_history_learning_curves_and_print_one_line_per_claim(tmp_path, capsys):
    from xtc.cli import main

    cfg = tiny_config(tmp_path)
    write_tree(cfg, base_score)
    _add_history(cfg, base_score)
    cfg_file = tmp_path / "study.yaml"
    cfg_file.write_text(study.dump_config(cfg))
    res, figs = tmp_path / "results", tmp_path / "figures"
    common = ["--config", str(cfg_file)]
    assert main(["study", "aggregate", *common, "--runs-dir", cfg["paths"]["runs"], "--out-dir", str(res)]) == 0
    assert str(res / "history.csv") in json.loads(capsys.readouterr().out)["out"]
    hist = pd.read_csv(res / "history.csv")
    assert list(hist.columns) == study.HISTORY_COLUMNS and set(hist["run_id"]) == set(study.study_runs(cfg)["run_id"])
    long_w1 = hist[(hist["metric"] == "score") & (hist["wbits"] == 1) & (hist["epochs"] == 3) & (hist["depth"] == 4)
                   & (hist["kd"] == "one-stage") & (hist["lr"] == 5e-5) & (hist["da"] == "off")]
    assert sorted(set(long_w1["step"])) == [10, 20, 30]
    assert main(["study", "figures", *common, "--results-dir", str(res), "--out-dir", str(figs)]) == 0
    written = sorted(os.path.basename(p) for p in capsys.readouterr().out.split())
    assert written == sorted(f"{n}.{e}" for n in study.figure_names(cfg) for e in ("png", "pdf"))
    assert "learning_curve_w2.png" in written and "learning_curve_w1.pdf" in written
    assert main(["study", "claims", *common, "--results-dir", str(res), "--out", str(res / "claims.csv")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    claims = pd.read_csv(res / "claims.csv")
    assert list(claims.columns) == study.CLAIMS_COLUMNS and len(lines) == len(claims)
    for line, r in zip(lines, claims.to_dict("records")):
        assert line == f"claim {r['claim']} [{r['task']}, {r['role']}]: {r['verdict']} -- {r['evidence']}"
    curves_args = ["study", "curves", *common, "--results-dir", str(res), "--out-csv", str(res / "learning_curves.csv"),
                   "--out-md", str(res / "tables" / "learning_curves.md")]
    assert main(curves_args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    curves = pd.read_csv(res / "learning_curves.csv")
    assert len(lines) == len(curves) > 0
    for line, r in zip(lines, curves.to_dict("records")):
        assert line.startswith(f"{r['task']} W{r['wbits']}: {r['verdict']} (late gain {r['gain']:+.2f} [")
    assert (res / "tables" / "learning_curves.md").read_text().startswith("## Learning curves")
    # results without a history.csv (an older aggregation): the axis figures only; no plateau tests
    os.remove(res / "history.csv")
    os.remove(res / "learning_curves.csv")
    assert main(curves_args) == 2
    assert "no history.csv there" in capsys.readouterr().err and not (res / "learning_curves.csv").exists()
    assert main(["study", "figures", *common, "--results-dir", str(res), "--out-dir", str(tmp_path / "f2")]) == 0
    assert sorted(os.listdir(tmp_path / "f2")) == sorted(f"{n}.{e}" for n in study.FIGURES for e in ("png", "pdf"))


def test_cli_study_reproduce(tmp_path, capsys):
    from xtc.cli import main

    cfg = tiny_config(tmp_path)
    write_tree(cfg, base_score)
    ref, fresh = tmp_path / "reference", tmp_path / "fresh"
    study.write_results(cfg, cfg["paths"]["runs"], str(ref))
    study.write_results(cfg, cfg["paths"]["runs"], str(fresh))
    out_csv, out_md = tmp_path / "out" / "reproduction.csv", tmp_path / "out" / "reproduction.md"
    args = ["study", "reproduce", "--reference-dir", str(ref), "--results-dir", str(fresh), "--out-csv", str(out_csv),
            "--out-md", str(out_md)]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    n_configs = study.read_results(str(ref))[0]["config_id"].nunique()
    assert report["cells"] == n_configs and report["status"] == {"identical": n_configs}
    assert report["outside_ci"] == [] and report["out"] == [str(out_csv), str(out_md)]
    assert len(pd.read_csv(out_csv)) == n_configs and f"{n_configs} identical (of {n_configs})" in out_md.read_text()
    # a fresh study 5 points lower on one configuration: outside the reference's CI, and named
    summary = pd.read_csv(fresh / "summary.csv")
    cid = study.config_key("student/" + ANCHOR)
    summary.loc[summary["config_id"] == cid, "mean"] -= 0.05
    summary.to_csv(fresh / "summary.csv", index=False)
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["outside_ci"] == [cid] and report["status"]["outside CI"] == 1
    # bad input: one line naming the problem, exit 2, nothing written
    new = tmp_path / "new"
    csv, md = str(new / "reproduction.csv"), str(new / "reproduction.md")
    for ref_dir, res_dir, o_csv, o_md, problem in (
            (tmp_path / "nowhere", fresh, csv, md, "no summary.csv in the reference folder"),
            (ref, cfg["paths"]["runs"], csv, md, "no summary.csv in the fresh folder"),
            (ref, fresh, str(tmp_path), md, "is a folder"),
            (ref, fresh, csv, csv, "are the same file")):
        assert main(["study", "reproduce", "--reference-dir", str(ref_dir), "--results-dir", str(res_dir),
                     "--out-csv", o_csv, "--out-md", o_md]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("xtc study: error:") and problem in err, err
        assert not new.exists()
