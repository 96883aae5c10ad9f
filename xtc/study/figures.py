"""Figures, PNG and PDF: score vs training budget, learning rate, KD mode, data augmentation and depth, score vs
model size, and learning curves (dev score vs optimizer step) per weight bit-width. Error bars and bands are 95%
t-intervals over seeds, as in the tables. Arms of one factor (KD modes, augmentation) are points with intervals,
not bars: a bar's length reads as the score from 0, which a zoomed axis would misstate.

Byte-identical output for the same inputs: every figure is drawn under one fixed style (matplotlib's
defaults, the bundled DejaVu Sans, a fixed svg.hashsalt), whatever the user's matplotlibrc says, and saved
without timestamps (PDF: no CreationDate; PNG and PDF: a fixed Software/Creator/Producer string).
"""
from __future__ import annotations

import functools
import math
import os
import textwrap

from xtc.study.aggregate import score_metrics
from xtc.study.config import resolve_epochs
from xtc.study.diagnostics import LINEAR_ROLES
from xtc.study.grid import axis_tasks
from xtc.study.views import (METRIC_ABBREV, axis_config as _axis, axis_view, isnan as _nan, point_averages,
                             task_title, teacher_avg, teacher_view)

FIGURES = ("budget", "lr", "kd", "da", "depth", "size")
FLIP_SHARE_FIGURE = "flip_share"  # drawn from diagnostics.csv (rule diagnostics), not from runs.csv
FIGURE_AXIS = {"budget": "budget", "lr": "lr", "kd": "kd", "da": "da", "depth": "xtc", "size": "xtc"}  # the axis each one draws
SOFTWARE = "xtc-bench (matplotlib)"
STYLE = {"svg.hashsalt": "xtc-bench", "font.family": "DejaVu Sans", "pdf.fonttype": 42, "ps.fonttype": 42,
         "figure.dpi": 100, "savefig.dpi": 150}
PDF_METADATA = {"Creator": SOFTWARE, "Producer": SOFTWARE, "CreationDate": None, "ModDate": None}
PNG_METADATA = {"Software": SOFTWARE}


def _styled(fn):
    """Draw under matplotlib's defaults plus STYLE (the user's rc settings cannot change the bytes)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import matplotlib
        import matplotlib.pyplot as plt

        matplotlib.use("Agg")
        with plt.style.context("default"), matplotlib.rc_context(STYLE):
            return fn(*args, **kwargs)
    return wrapper


def _error_bar(sd, n) -> float:
    """The error bar of a mean over n seeds: its 95% CI half-width; NaN where n is missing or below 2."""
    from xtc.study.tables import ci_half_width

    return ci_half_width(sd, int(n)) if n == n and n is not None else float("nan")
WBITS_STYLE = {32: ("tab:blue", "o"), 8: ("tab:purple", "P"), 4: ("tab:brown", "X"), 2: ("tab:green", "s"),
               1: ("tab:red", "^")}


def _panels(tasks, extra_avg=True):
    import matplotlib.pyplot as plt

    names = list(tasks) + (["avg"] if extra_avg else [])
    n = len(names)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    flat = axes.ravel()
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, dict(zip(names, flat[:n]))


def _panel_title(config, name):
    if name == "avg":
        return "Avg over tasks"
    return f"{task_title(name)} ({'/'.join(METRIC_ABBREV[m] for m in score_metrics(name, config))})"


def _suptitle(fig, text):
    """A figure title wrapped to the figure's width (a one-panel figure is narrow)."""
    fig.suptitle(textwrap.fill(text, width=int(12 * fig.get_figwidth())), fontsize=11)


def _no_data(ax, msg="no finished runs yet"):
    ax.text(0.5, 0.5, msg, ha="center", va="center", transform=ax.transAxes, color="gray")


def _teacher_line(ax, y, label=True):
    if not _nan(y):
        ax.axhline(y, color="black", ls="--", lw=1, label="teacher (fp32)" if label else None)


def _save(fig, out_dir, name):
    from xtc.files import atomic_write, make_dirs

    make_dirs(out_dir, "the figures folder")
    fig.tight_layout()
    paths = []
    for ext, meta in (("png", PNG_METADATA), ("pdf", PDF_METADATA)):
        p = os.path.join(out_dir, f"{name}.{ext}")
        with atomic_write(p, "wb", what="the figure") as f:  # a kill never leaves half a figure
            fig.savefig(f, format=ext, dpi=150 if ext == "png" else None, metadata=meta)
        paths.append(p)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return paths


def _line_panels(config, runs, axis, xfun, xlabel, group="wbits", logx=False, fig_title="", dodge_pt=4.0):
    """One panel per task and Avg: score against xfun(point) per group (weight bits), with 95% intervals;
    the groups are drawn `dodge_pt` points apart on the page (any x scale) so equal scores do not hide each
    other."""
    from matplotlib.transforms import ScaledTranslation

    import matplotlib.ticker  # noqa: F401  (used through the matplotlib name)
    import matplotlib

    fig, panels = _panels(axis_tasks(config, axis))
    view = axis_view(config, axis, runs)
    teacher = teacher_view(config, runs)
    t_avg = teacher_avg(config, teacher, axis_tasks(config, axis))
    if not len(view):
        for ax in panels.values():
            _no_data(ax)
    else:
        pts = point_averages(config, view)
        for name, ax in panels.items():
            if name == "avg":
                src = pts.rename(columns={"avg": "y"})
                src = src.assign(e=[_error_bar(a, n) for a, n in zip(src["avg_std"], src["n_seeds_all_tasks"])])
            else:
                src = view[view["task"] == name].rename(columns={"score": "y"})
                src = src.assign(e=[_error_bar(a, n) for a, n in zip(src["score_std"], src["n"])])
            plotted = False
            groups = list(src.groupby(group, sort=True)) if group else [(None, src)]
            for gi, (g, grp) in enumerate(groups):
                shift = ScaledTranslation((gi - (len(groups) - 1) / 2) * dodge_pt / 72, 0, fig.dpi_scale_trans)
                grp = grp.assign(x=[xfun(r, name) for r in grp.to_dict("records")]).sort_values("x")
                grp = grp[~grp["y"].isna()]
                if not len(grp):
                    continue
                color, marker = WBITS_STYLE.get(int(g), ("tab:gray", "o")) if group == "wbits" else ("tab:red", "o")
                lab = (f"W{int(g)}A8" if int(g) < 32 else "fp32") if group == "wbits" else None
                bars = ax.errorbar(grp["x"], grp["y"], yerr=grp["e"].fillna(0), color=color, marker=marker,
                                   capsize=3, label=lab)
                for artist in bars.get_children():
                    artist.set_transform(artist.get_transform() + shift)
                plotted = True
            _teacher_line(ax, t_avg if name == "avg" else teacher.get(name, {}).get("score", float("nan")))
            if not plotted:
                _no_data(ax)
            if logx:
                ax.set_xscale("log")
                xs = sorted({xfun(r, name) for r in src.to_dict("records")})
                ax.set_xticks(xs)
                ax.set_xticklabels([f"{x:g}" for x in xs], fontsize=8)
                ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_title(_panel_title(config, name), fontsize=10)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("dev score (x100), ± 95% CI")
            ax.grid(alpha=0.3)
        first = next(iter(panels.values()))
        handles, labels = first.get_legend_handles_labels()
        if handles:
            first.legend(fontsize=8, loc="best")
    if fig_title:
        _suptitle(fig, fig_title)
    return fig


@_styled
def fig_budget(config, runs, out_dir):
    def x(r, name):
        task = config["tasks"][0] if name == "avg" else name
        return resolve_epochs(config, task, r["v_epochs"])

    fig = _line_panels(config, runs, "budget", x, "training budget (epochs)", fig_title=
                       "Score vs training budget per weight bit-width (8-bit activations, one-stage KD)")
    return _save(fig, out_dir, "budget")


@_styled
def fig_lr(config, runs, out_dir):
    fig = _line_panels(config, runs, "lr", lambda r, n: float(r["v_lr"]), "peak learning rate (log scale)",
                       logx=True, fig_title="Learning-rate sensitivity of the quantized student")
    return _save(fig, out_dir, "lr")


@_styled
def fig_depth(config, runs, out_dir):
    L = config["teacher"]["num_layers"]
    depth = lambda r, n: L if r["v_depth"] == "full" else int(r["v_depth"])  # noqa: E731
    fig = _line_panels(config, runs, "xtc", depth, "student depth (transformer layers)", dodge_pt=8.0,
                       fig_title="XTC: score vs depth per weight bit-width (layer reduction, then quantization)")
    # ticks at the depths drawn and at the teacher's, where it is drawn as a star (and dashed across): one depth
    # is a point on an integer axis, not a 0.3-wide span of fractional depths
    ticks = sorted({depth(r, None) for r in members_of_axis(config, "xtc")} | {L})
    teacher = teacher_view(config, runs)
    tasks = axis_tasks(config, "xtc")
    for ax, name in zip([a for a in fig.axes if a.get_visible()], [*tasks, "avg"]):
        y = teacher_avg(config, teacher, tasks) if name == "avg" else teacher.get(name, {}).get("score", float("nan"))
        if not _nan(y):
            ax.plot([L], [y], marker="*", ms=13, color="black", ls="none", zorder=4)
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{t}\n(teacher)" if t == L else str(t) for t in ticks])
        ax.set_xlim(min(ticks) - 0.6, max(ticks) + 0.6)
    return _save(fig, out_dir, "depth")


def members_of_axis(config: dict, axis: str) -> list[dict]:
    """The axis points of `axis` (raw varied values as v_<factor>), one record per point."""
    from xtc.study.grid import members

    m = members(config)
    return m[m["axis"] == axis].drop_duplicates("point").to_dict("records")


# the arms of the kd and da axes: colour, marker and legend label (controls hollow beside what they control)
ARM_STYLE = {
    "kd": {"none": ("tab:gray", "o", True, "none (labels only)"),
           "two-stage": ("tab:orange", "s", True, "two-stage (stage 1 at 2.5x the rate)"),
           "two-stage-1x": ("tab:orange", "s", False, "two-stage-1x (stage 1 at 1x: control)"),
           "one-stage": ("tab:red", "^", True, "one-stage")},
    "da": {"off": ("tab:red", "^", True, "off"),
           "on": ("tab:green", "D", True, "on: same epochs, (1 + copies)x the steps"),
           "on-steps": ("tab:green", "D", False, "on-steps: same steps as off (control)")},
}


def _arm_points(config, runs, axis: str, title: str, ylabel: str):
    """One figure of an axis that varies one factor over named arms (kd, da): per task and Avg, each arm's mean
    score with its 95% interval as a point with error bars, arms side by side; the teacher dashed."""
    import matplotlib.pyplot as plt
    import numpy as np

    view = axis_view(config, axis, runs)
    teacher = teacher_view(config, runs)
    tasks = axis_tasks(config, axis)
    names = list(tasks) + ["avg"]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.9 * len(names) + 3.5), 3.9))
    if not len(view):
        _no_data(ax)
    else:
        pts = point_averages(config, view)
        arms = list(_axis(config, axis)["vary"][axis])
        width = 0.7 / max(1, len(arms))
        for i, arm in enumerate(arms):
            ys, es = [], []
            for name in names:
                if name == "avg":
                    sel = pts[pts[f"v_{axis}"] == arm]
                    ys.append(float(sel["avg"].iloc[0]) if len(sel) else np.nan)
                    es.append(_error_bar(sel["avg_std"].iloc[0], sel["n_seeds_all_tasks"].iloc[0]) if len(sel)
                              else np.nan)
                else:
                    sel = view[(view[f"v_{axis}"] == arm) & (view["task"] == name)]
                    ys.append(float(sel["score"].iloc[0]) if len(sel) else np.nan)
                    es.append(_error_bar(sel["score_std"].iloc[0], sel["n"].iloc[0]) if len(sel) else np.nan)
            color, marker, filled, label = ARM_STYLE.get(axis, {}).get(arm, ("tab:gray", "o", True, str(arm)))
            xs = np.arange(len(names)) + (i - (len(arms) - 1) / 2) * width
            ax.errorbar(xs, ys, yerr=np.nan_to_num(es), fmt=marker, color=color, mfc=color if filled else "white",
                        mec=color, ms=7, capsize=3, lw=1.5, label=label)
        t_vals = [teacher[n]["score"] for n in tasks] + [teacher_avg(config, teacher, tasks)]
        for j, y in enumerate(t_vals):
            if not _nan(y):
                ax.hlines(y, j - 0.45, j + 0.45, colors="black", linestyles="--", lw=1,
                          label="teacher (fp32)" if j == 0 else None)
        for j in range(1, len(names)):  # tasks apart: each has its own metric and scale
            ax.axvline(j - 0.5, color="lightgray", lw=0.8)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([_panel_title(config, n) for n in names], fontsize=8)
    ax.set_xlim(-0.5, len(names) - 0.5)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return fig


@_styled
def fig_kd(config, runs, out_dir):
    fig = _arm_points(config, runs, "kd", "Distillation modes at the long budget (1-bit weights, 8-bit activations)",
                      "dev score (x100), ± 95% CI\n(axis zoomed: points, not bars)")
    return _save(fig, out_dir, "kd")


@_styled
def fig_da(config, runs, out_dir):
    fig = _arm_points(config, runs, "da", "Data augmentation at matched epochs (on) and matched optimizer steps "
                      "(on-steps), 1-bit weights", "dev score (x100), ± 95% CI\n(axis zoomed: points, not bars)")
    return _save(fig, out_dir, "da")


@_styled
def fig_size(config, runs, out_dir):
    import matplotlib
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401

    view = axis_view(config, "xtc", runs)
    teacher = teacher_view(config, runs)
    t_avg = teacher_avg(config, teacher, axis_tasks(config, "xtc"))
    t_bytes = [teacher[t]["bytes"] for t in axis_tasks(config, "xtc") if not _nan(teacher[t]["bytes"])]
    fig, ax = plt.subplots(figsize=(8.2, 4.4))  # wide enough for the legend right of the axes
    plotted = hollow = False
    if len(view):
        pts = point_averages(config, view)
        for r in pts.to_dict("records"):
            if _nan(r["avg"]) or _nan(r["model_bytes"]):
                continue
            b = int(r["wbits"])
            color, marker = WBITS_STYLE.get(b, ("tab:gray", "o"))
            packed = r["size_source"] == "packed" or b == 32
            hollow |= not packed
            ax.scatter(r["model_bytes"] / 1e6, r["avg"], color=color if packed else "none", edgecolors=color,
                       marker=marker, s=60, zorder=3)
            ax.annotate(f"{int(r['depth'])}L", (r["model_bytes"] / 1e6, r["avg"]), textcoords="offset points",
                        xytext=(5, 4), fontsize=8)
            plotted = True
        for b in sorted({int(w) for w in pts["wbits"]}, reverse=True):
            color, marker = WBITS_STYLE.get(b, ("tab:gray", "o"))
            ax.scatter([], [], color=color, marker=marker, label="fp32 student" if b == 32 else f"W{b}A8 student")
        if hollow:  # the legend names only what is drawn
            ax.scatter([], [], color="none", edgecolors="gray", marker="o", label="hollow: theoretical size\n(not exported)")
    if t_bytes:  # the size claim's threshold (claims.claim_size): where a 1-bit student at half depth must be
        from xtc.study.sizes import half_depth, one_bit_ceiling, paper_size_share, teacher_architecture
        from xtc.study.config import task_of

        arch, d = teacher_architecture(config), half_depth(config["teacher"]["num_layers"])
        if arch is not None:
            tasks = axis_tasks(config, "xtc")
            ceiling = sum(one_bit_ceiling(arch, d, task_of(config, t).num_labels) for t in tasks) / len(tasks)
            required = paper_size_share() * ceiling
            tb = sum(t_bytes) / len(t_bytes)
            ax.axvline(tb / required / 1e6, color="gray", ls=":", lw=1,
                       label=f"size claim: {required:.1f}x smaller\n({d}L 1-bit ceiling {ceiling:.1f}x)")
    if t_bytes and not _nan(t_avg):
        tb = sum(t_bytes) / len(t_bytes)
        ax.scatter([tb / 1e6], [t_avg], marker="*", s=220, color="black", label="teacher (fp32)", zorder=4)
        plotted = True
    if not plotted:
        _no_data(ax)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(
        lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel("model size (MB, log scale)\npacked .xtc weights for quantized students, fp32 bytes otherwise")
    ax.set_ylabel("Avg dev score over tasks (x100)")
    ax.set_title("Score vs model size (XTC axis)", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    if plotted:  # outside the axes, right of them: inside, it covered points (tight_layout makes room for it)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)
    return _save(fig, out_dir, "size")


def learning_curve_names(config: dict) -> list[str]:
    """One learning-curve figure per quantized weight bit-width of the `budget` axis: learning_curve_w<b>."""
    ax = _axis(config, "budget")
    if not ax:
        return []
    bits = ax["vary"].get("wbits", [(ax.get("set") or {}).get("wbits", config["anchor"]["wbits"])])
    return [f"learning_curve_w{int(b)}" for b in sorted({int(b) for b in bits if int(b) < 32}, reverse=True)]


def figure_names(config: dict, with_history: bool = True) -> list[str]:
    """Every figure make_figures writes for this config (each as .png and .pdf): those whose axis the config
    has, plus the learning curves."""
    axes = {a["name"] for a in config["axes"]}
    return [f for f in FIGURES if FIGURE_AXIS[f] in axes] + (learning_curve_names(config) if with_history else [])




@_styled
def fig_learning_curves(config, history, runs, out_dir) -> list[str]:
    """Per quantized bit-width of the `budget` axis: dev score (task score x100) against optimizer steps, one
    line per budget (mean over seeds at each evaluation, band = 95% t-interval over seeds), the teacher's
    score dashed. A curve still rising at its last step is an under-trained student."""
    import matplotlib.pyplot as plt
    import pandas as pd

    from xtc.study.grid import members
    from xtc.study.tables import ci_half_width, point_label

    tasks = axis_tasks(config, "budget")
    teacher = teacher_view(config, runs)
    m = members(config)
    m = m[m["axis"] == "budget"]
    hist = history[history["metric"] == "score"] if history is not None and len(history) else pd.DataFrame()
    paths = []
    for name in learning_curve_names(config):
        b = int(name.rsplit("w", 1)[1])
        mb = m[m["wbits"] == b]
        fig, panels = _panels(tasks, extra_avg=False)
        budgets = sorted(dict.fromkeys(mb["v_epochs"]), key=lambda v: resolve_epochs(config, tasks[0], v))
        colors = [plt.cm.viridis(x) for x in ([0.45] if len(budgets) < 2 else
                                              [0.85 * i / (len(budgets) - 1) for i in range(len(budgets))])]
        for task, ax in panels.items():
            plotted = False
            for i, budget in enumerate(budgets):
                rids = set(mb[(mb["task"] == task) & (mb["v_epochs"] == budget)]["run_id"])
                h = hist[hist["run_id"].isin(rids)] if len(hist) else hist
                if not len(h):
                    continue
                g = h.groupby("step")["value"]
                curve = pd.DataFrame({"y": 100 * g.mean(), "sd": 100 * g.std(ddof=1), "n": g.size()}).reset_index()
                curve["e"] = [ci_half_width(sd, n) for sd, n in zip(curve["sd"], curve["n"])]
                color = colors[i]
                n_seeds = int(h["seed"].nunique())
                ax.plot(curve["step"], curve["y"], color=color, marker="o", ms=3,
                        label=f"{point_label(config, 'epochs', budget)}, {n_seeds} seed(s)")
                band = curve[~curve["e"].isna()]
                if len(band):  # a band between evaluations, an error bar at each (a one-evaluation run has no band)
                    ax.fill_between(band["step"], band["y"] - band["e"], band["y"] + band["e"], color=color,
                                    alpha=0.15, lw=0)
                    ax.errorbar(band["step"], band["y"], yerr=band["e"], fmt="none", ecolor=color, capsize=3, lw=1)
                plotted = True
            _teacher_line(ax, teacher.get(task, {}).get("score", float("nan")))
            if not plotted:
                _no_data(ax, "no evaluation history")
            ax.set_title(_panel_title(config, task), fontsize=10)
            ax.set_xlabel("optimizer steps")
            ax.set_ylabel("dev score (x100), ± 95% CI")
            ax.grid(alpha=0.3)
            if plotted:
                ax.legend(fontsize=7, loc="best")  # low 1-bit curves sit where "lower right" would cover them
        _suptitle(fig, f"Learning curves: W{b}A8 students of the budget axis (dev score at each evaluation)")
        paths += _save(fig, out_dir, name)
    return paths


def make_figures(config: dict, runs, out_dir: str, history=None) -> list[str]:
    """FIGURES, plus the learning curves when `history` (views.read_history / collect_history) is given."""
    paths = []
    drawn = figure_names(config, with_history=False)
    for name, f in zip(FIGURES, (fig_budget, fig_lr, fig_kd, fig_da, fig_depth, fig_size)):
        if name in drawn:
            paths += f(config, runs, out_dir)
    if history is not None:
        paths += fig_learning_curves(config, history, runs, out_dir)
    return paths


@_styled
def fig_flip_share(config: dict, diag, out_dir: str) -> list[str]:
    """Changed-code share (sign flips at 1 bit) of the encoder's Linear weights against optimizer steps, one
    panel per task, one line per quantized student setting (mean over seeds), coloured by weight bits."""
    tasks = list(config["tasks"])
    fig, panels = _panels(tasks, extra_avg=False)
    d = diag[diag["role"].isin(LINEAR_ROLES)] if diag is not None and len(diag) else None
    for task, ax in panels.items():
        dt = d[d["task"] == task] if d is not None else None
        if dt is None or not len(dt):
            _no_data(ax, "no quantized run")
        else:
            seen, full = set(), int(dt["depth"].max())
            for (cfg_id, wbits, depth), g in dt.groupby(["config_id", "wbits", "depth"], sort=True):
                curve = g.groupby(["run_id", "step"])["changed_share"].mean().groupby("step").mean()
                color, marker = WBITS_STYLE.get(int(wbits), ("tab:gray", "o"))
                label = f"W{int(wbits)}, {int(depth)}L"
                ax.plot(curve.index, 100 * curve.values, color=color, marker=marker, ms=3, lw=1,
                        ls="-" if int(depth) == full else "--",  # same bits, fewer layers: dashed
                        label=None if label in seen else label)
                seen.add(label)
            ax.legend(fontsize=7, loc="best")
        ax.set_title(task_title(task), fontsize=10)
        ax.set_xlabel("optimizer steps")
        ax.set_ylabel("encoder weight codes changed (%)")
        ax.grid(alpha=0.3)
    _suptitle(fig, "Sign flips (1 bit) and code changes (2+ bits) since the start of each run")
    return _save(fig, out_dir, FLIP_SHARE_FIGURE)
