"""xtc.study.figures: byte-identical PNG and PDF for the same inputs (whatever the user's matplotlib settings
and the clock), error bars as 95% CIs, and the learning curves read from the runs' evaluation histories."""
import json
import os

import matplotlib
import pytest

from test_claims import good, study_config, write_tree
from xtc import study
from xtc.study.figures import fig_learning_curves, figure_names, learning_curve_names, make_figures
from xtc.study.views import collect_history, read_history, write_history


def history_tree(tmp_path):
    """The synthetic study of test_claims, each run with an evaluation history: a curve that rises with the
    optimizer step towards the run's final score (8 steps per epoch), evaluated at every epoch."""
    cfg = study_config(tmp_path, seeds=(1, 2, 3))
    root = write_tree(cfg, good)
    for r in study.study_runs(cfg).to_dict("records"):
        path = os.path.join(root, r["run_id"], "metrics.json")
        with open(path) as f:
            rec = json.load(f)
        final = rec["metrics"]
        steps = [8 * (e + 1) for e in range(int(r["epochs"]))]
        rec["history"] = [{"stage": "kd", "step": s, "epoch": s / 8,
                           "metrics": {k: v - 0.2 * (1 - s / steps[-1]) for k, v in final.items()}}
                          for s in steps]
        with open(path, "w") as f:
            json.dump(rec, f)
    return cfg, root


def test_history_is_read_from_the_run_folders_as_a_tidy_table(tmp_path):
    cfg, root = history_tree(tmp_path)
    hist = collect_history(cfg, root)
    anchor = hist[(hist["kind"] == "student") & (hist["task"] == "mrpc") & (hist["wbits"] == 1)
                  & (hist["epochs"] == 8.0) & (hist["seed"] == 1) & (hist["depth"] == 4) & (hist["da"] == "off")
                  & (hist["kd"] == "one-stage")]
    assert sorted(set(anchor["step"])) == [8, 16, 24, 32, 40, 48, 56, 64]
    assert set(anchor["metric"]) == {"f1", "accuracy", "score"}
    last = anchor[anchor["step"] == 64].set_index("metric")["value"]
    assert last["score"] == pytest.approx((last["f1"] + last["accuracy"]) / 2)  # MRPC: mean of F1 and accuracy
    out = write_history(cfg, root, str(tmp_path / "results" / "history.csv"))
    back = read_history(str(tmp_path / "results"))
    assert len(back) == len(out) and read_history(str(tmp_path / "nowhere")) is None


def _render(cfg, runs, hist, out_dir):
    return study.make_figures(cfg, runs, out_dir, history=hist)


def test_figures_are_byte_identical_across_renders_clocks_and_user_settings(tmp_path, monkeypatch):
    cfg, root = history_tree(tmp_path)
    res = study.write_results(cfg, root, cfg["paths"]["results"])
    hist = collect_history(cfg, root)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    first = _render(cfg, res["runs"], hist, str(tmp_path / "a"))
    assert sorted(os.path.basename(p) for p in first) == sorted(
        f"{n}.{e}" for n in figure_names(cfg) for e in ("png", "pdf"))
    assert learning_curve_names(cfg) == ["learning_curve_w2", "learning_curve_w1"]
    # another clock and a user who likes big fonts and thick lines: the same bytes
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    with matplotlib.rc_context({"font.size": 20, "lines.linewidth": 5, "axes.prop_cycle": matplotlib.cycler(
            color=["k"])}):
        second = _render(cfg, res["runs"], hist, str(tmp_path / "b"))
    for p, q in zip(first, second):
        with open(p, "rb") as f, open(q, "rb") as g:
            assert f.read() == g.read(), os.path.basename(p)
    with open(first[1], "rb") as f:
        pdf = f.read()
    assert b"CreationDate" not in pdf and b"xtc-bench" in pdf


def test_learning_curves_without_history_say_so(tmp_path):
    cfg, root = history_tree(tmp_path)
    res = study.write_results(cfg, root, cfg["paths"]["results"])
    empty = collect_history(cfg, str(tmp_path / "nothing"))
    assert empty.empty
    paths = fig_learning_curves(cfg, empty, res["runs"], str(tmp_path / "f"))
    assert [os.path.basename(p) for p in paths] == ["learning_curve_w2.png", "learning_curve_w2.pdf",
                                                    "learning_curve_w1.png", "learning_curve_w1.pdf"]
    # without a history the workflow's figure list has no learning curves; and a profile without an axis gets
    # no (empty) figure of it: this config, like `standard`, has no lr axis
    assert "lr" not in {a["name"] for a in cfg["axes"]}
    assert figure_names(cfg, with_history=False) == [f for f in study.FIGURES if f != "lr"]
    drawn = make_figures(cfg, res["runs"], str(tmp_path / "no-lr"))
    assert sorted(os.path.basename(p) for p in drawn) == sorted(
        f"{f}.{e}" for f in study.FIGURES if f != "lr" for e in ("png", "pdf"))
    with_lr = {**cfg, "axes": [*cfg["axes"], {"name": "lr", "vary": {"lr": [2.0e-5, 5.0e-5]}}]}
    assert figure_names(with_lr, with_history=False) == list(study.FIGURES)


def test_figures_draw_the_control_arms_one_depth_and_intervals_where_one_evaluation_has_no_band(tmp_path,
                                                                                                    monkeypatch):
    """Issue 23: the kd and da figures are points with intervals (no bars from a cut-off axis) and show the
    control arms; an xtc axis with one depth is drawn on integer ticks (that depth and the teacher's), not a
    0.3-wide span; a budget evaluated once still gets its interval; size's legend names only what is drawn."""
    from matplotlib.container import ErrorbarContainer

    import xtc.study.figures as figures

    cfg = study_config(tmp_path, seeds=(1, 2, 3))
    cfg["axes"][1]["vary"]["kd"] = ["two-stage", "two-stage-1x", "one-stage"]
    cfg["axes"][2]["vary"]["da"] = ["off", "on", "on-steps"]
    for axis in cfg["axes"][3:]:  # depth, xtc: one reduced depth, as in `standard`
        axis["vary"]["depth"] = [2]
    cfg = study.validate_config(cfg)
    root = write_tree(cfg, good)
    for r in study.study_runs(cfg).to_dict("records"):  # the short budget evaluated once, at its end
        path = os.path.join(root, r["run_id"], "metrics.json")
        with open(path) as f:
            rec = json.load(f)
        rec["history"] = [{"stage": "kd", "step": 8 * int(r["epochs"]), "metrics": rec["metrics"]}]
        with open(path, "w") as f:
            json.dump(rec, f)
    res = study.write_results(cfg, root, cfg["paths"]["results"])
    drawn = {}
    monkeypatch.setattr(figures, "_save", lambda fig, out_dir, name: drawn.setdefault(name, fig) and [name])
    assert "da" in figure_names(cfg)
    make_figures(cfg, res["runs"], str(tmp_path / "f"), history=collect_history(cfg, root))
    for name, arms in (("kd", ["two-stage", "two-stage-1x", "one-stage"]), ("da", ["off", "on", "on-steps"])):
        ax = drawn[name].axes[0]
        labels = ax.get_legend_handles_labels()[1]
        assert [next(lab for lab in labels if lab.split(" ")[0].rstrip(":") == a) for a in arms]
        assert not ax.patches and sum(isinstance(c, ErrorbarContainer) for c in ax.containers) == len(arms)
    for ax in (a for a in drawn["depth"].axes if a.get_visible()):
        assert list(ax.get_xticks()) == [2, 4] and ax.get_xlim()[1] - ax.get_xlim()[0] > 2
    bars = [seg for ax in drawn["learning_curve_w1"].axes for c in ax.containers
            if isinstance(c, ErrorbarContainer) for seg in c.lines[2][0].get_segments()]
    short = [seg for seg in bars if seg[0][0] == 8]  # the short budget's one evaluation (step 8)
    assert len(short) == 2 and all(seg[1][1] > seg[0][1] for seg in short)  # an error bar per task, no band
    size_labels = drawn["size"].axes[0].get_legend_handles_labels()[1]
    assert not any("hollow" in lab for lab in size_labels)  # every quantized student here was exported
