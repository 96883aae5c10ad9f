"""Paper-style Markdown tables, one per axis of the config."""
from __future__ import annotations

import math
import os

from xtc.study.aggregate import score_metrics
from xtc.study.config import resolve_epochs
from xtc.study.grid import FACTORS, axis_tasks
from xtc.study.paths import teacher_run_id
from xtc.study.stats import CONFIDENCE
from xtc.study.views import (METRIC_ABBREV, axis_config as _axis, axis_view, point_averages,
                             task_title, teacher_avg, teacher_view)

FACTOR_TITLES = {"depth": "layers", "wbits": "W bits", "abits": "A bits", "kd": "KD", "epochs": "budget",
                 "lr": "learning rate", "da": "DA", "examples": "training examples"}


def _fmt(x, nd=1) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def ci_half_width(sd: float, n: int) -> float:
    """Half-width of the 95% t-interval of a mean of n seeds with standard deviation sd (ddof=1); NaN if n < 2."""
    from scipy.stats import t

    if n is None or n < 2 or sd is None or math.isnan(sd):
        return float("nan")
    return float(t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * sd / math.sqrt(n)


def _plus_minus(half: float) -> str:
    return "" if math.isnan(half) else f" ±{half:.1f}"


def teacher_text(config: dict, teacher: dict, tasks) -> str:
    """The teacher's scores in words (and its distance to a full-data reference, where the config gives one)."""
    t = config["teacher"]
    parts = []
    for task in tasks:
        r = teacher[task]
        metrics = score_metrics(task, config)
        detail = "" if len(metrics) == 1 else " (" + "/".join(f"{METRIC_ABBREV[m]} {_fmt(r[f'm_{m}'])}"
                                                               for m in metrics) + ")"
        parts.append(f"{task_title(task)} {_fmt(r['score'])}{detail}")
    text = (f"Teacher: fp32, {t['num_layers']} layers, one fine-tuning run per task (seed {t.get('seed', '?')}, "
            f"{t['epochs']:g} epochs" + (f", {t['max_train_samples']} training examples" if t.get("max_train_samples")
                                         else "") + "): " + ", ".join(parts) + f"; Avg {_fmt(teacher_avg(config, teacher, tasks))}.")
    ref = t.get("reference") or {}
    if ref:
        dist = [f"{task_title(task)} {teacher[task]['score'] - 100 * ref[task]:+.1f}" for task in tasks
                if task in ref and not math.isnan(teacher[task]["score"])]
        if dist:
            text += " Distance to the same model fine-tuned on the full training set (teacher.reference): " + \
                ", ".join(dist) + "."
            n_eval = (config.get("data") or {}).get("max_eval_samples")
            if n_eval:  # the reference was scored on whole dev sets: say when these scores are not
                text += (f" (The reference is scored on the whole dev sets, these scores on at most the first "
                         f"{n_eval} dev examples of each task: the distance mixes two subsets.)")
    return text


def point_label(config: dict, factor: str, raw, task_epochs: dict | None = None) -> str:
    L = config["teacher"]["num_layers"]
    if factor == "epochs":
        if isinstance(raw, str):
            eps = sorted({resolve_epochs(config, t, raw) for t in config["tasks"]})
            return f"{raw} ({eps[0]:g} ep)" if len(eps) == 1 else f"{raw} ({'/'.join(f'{e:g}' for e in eps)} ep)"
        return f"{float(raw):g} ep"
    if factor == "depth":
        return str(L if raw == "full" else int(raw))
    if factor == "lr":
        return f"{float(raw):g}"
    if factor == "wbits":
        return "32 (fp32)" if int(raw) == 32 else str(int(raw))
    return str(raw)


def _anchor_text(config: dict, axis: dict) -> str:
    """What the axis holds fixed, from the runs it plans (so fp32 rows that are step-1 runs say their own
    A bits and budget): one value per factor, or each value with the weight bits of the rows that ran it."""
    from xtc.study.grid import members

    fixed = {**config["anchor"], **(axis.get("set") or {})}
    m = members(config)
    m = m[(m["axis"] == axis["name"]) & (m["kind"] == "student")]
    parts = []
    for f in FACTORS:
        if f in axis["vary"] or f not in fixed:  # examples: absent = the profile's data.max_train_samples
            continue
        col = "budget" if f == "epochs" else f
        groups: dict = {}
        if len(m) and col in m:
            for wb, v in zip(m["wbits"], m[col]):
                groups.setdefault(v, set()).add(int(wb))
        if len(groups) > 1:
            parts.append(f"{FACTOR_TITLES[f]} " + ", ".join(
                f"{point_label(config, f, v)} for {'/'.join('fp32' if b == 32 else f'W{b}' for b in sorted(ws))} rows"
                for v, ws in groups.items()))
        else:
            parts.append(f"{FACTOR_TITLES[f]} {point_label(config, f, next(iter(groups)) if groups else fixed[f])}")
    s1 = config["step1"]
    return ("Fixed: " + ", ".join(parts) + ". fp32 students below the teacher's depth are XTC step-1 runs "
            f"({s1['kd']} KD, budget {point_label(config, 'epochs', s1['epochs'])}, lr {float(s1['lr']):g}); "
            "quantized students below it start from their step-1 run.")


def _metric_header(config: dict, task: str) -> str:
    return f"{task_title(task)} ({'/'.join(METRIC_ABBREV[m] for m in score_metrics(task, config))})"


def axis_table(config: dict, axis_name: str, runs, missing) -> str:
    """A paper-style Markdown table of one axis: rows = configurations, columns = each task's GLUE metrics
    (x100, mean over seeds) and Avg; '—' marks a cell without a finished run, '†' a cell with fewer seeds
    than planned; footnotes list the missing runs."""
    axis = _axis(config, axis_name)
    tasks = axis_tasks(config, axis_name)
    view = axis_view(config, axis_name, runs, missing)
    teacher = teacher_view(config, runs)
    factors = list(axis["vary"])
    title = axis.get("title") or axis_name
    lines = [f"## {title}", "",
             "Dev-set scores x100, mean over seeds (" + ", ".join(_metric_header(config, t) for t in tasks) + "). "
             "Avg: mean over tasks of the task score (mean of its metrics). ±: half-width of the 95% t-interval "
             "over seeds (t with n-1 df, sd ddof=1) of the task score, or of the Avg over the seeds every task "
             "has; none with one seed.", "", teacher_text(config, teacher, tasks), ""]
    finals = _final_scores(runs)
    collapsed = set(runs.loc[runs["collapsed"].eq(True), "run_id"]) if len(runs) and "collapsed" in runs else set()
    head = [FACTOR_TITLES[f] for f in factors] + [_metric_header(config, t) for t in tasks] + ["Avg"]
    if finals:
        head.append("Avg, final ckpt")
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    L = config["teacher"]["num_layers"]
    t_cells = [f"teacher (fp32, {L} layers)" if i == 0 else "" for i in range(len(factors))]
    t_cells += ["/".join(_fmt(teacher[t][f"m_{m}"]) for m in score_metrics(t, config)) for t in tasks]
    t_cells += [_fmt(teacher_avg(config, teacher, tasks))]
    if finals:
        t_cells.append(_fmt(_avg_of([finals.get(teacher_run_id(t)) for t in tasks])))
    lines.append("| " + " | ".join(t_cells) + " |")
    n_collapsed = 0
    notes_missing: list[str] = []
    partial = False
    if len(view):
        avgs = point_averages(config, view).set_index("point")
        for point, grp in view.groupby("point", sort=False):
            first = grp.iloc[0]
            cells = [point_label(config, f, first[f"v_{f}"]) for f in factors]
            by_task = {r["task"]: r for r in grp.to_dict("records")}
            for t in tasks:
                r = by_task.get(t)
                if r is None or r["n"] == 0:
                    cells.append("—")
                else:
                    mark = "†" if r["n"] < r["n_planned"] else ""
                    partial |= bool(mark)
                    k = sum(rid in collapsed for rid in (r.get("seed_runs") or {}).values())
                    n_collapsed += k
                    mark += f"‡{k}" if k else ""
                    cells.append("/".join(_fmt(r[f"m_{m}"]) for m in score_metrics(t, config)) + mark
                                 + _plus_minus(ci_half_width(r["score_std"], r["n"])))
                if r is not None:
                    notes_missing += r["missing"]
            a = avgs.loc[point]
            cells.append(_fmt(a["avg"]) + _plus_minus(ci_half_width(a["avg_std"], a["n_seeds_all_tasks"])))
            if finals:
                per_task = [_avg_of([finals.get(rid) for rid in (by_task[t].get("seed_runs") or {}).values()])
                            if t in by_task else None for t in tasks]
                cells.append(_fmt(_avg_of(per_task)))
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", _anchor_text(config, axis)]
    if any(math.isnan(teacher[t]["score"]) for t in tasks):
        notes_missing += [teacher_run_id(t) for t in tasks if math.isnan(teacher[t]["score"])]
    if partial:
        lines.append("† fewer finished seeds than planned (the mean is over the finished ones).")
    if finals:
        lines.append("Avg, final ckpt: the same Avg at each run's last evaluation (the final checkpoint), beside the "
                     "selected checkpoint's.")
    if n_collapsed:
        lines.append(f"‡k: k seeds of that cell collapsed (one class, or one constant score, for every dev example): "
                     f"{n_collapsed} run(s) in this table; their scores are a majority-class or constant baseline, "
                     "not a trained model's.")
    if notes_missing:
        uniq = list(dict.fromkeys(notes_missing))
        lines += ["", f"— / † : {len(uniq)} planned run(s) without results:", ""]
        lines += [f"- `{r}`" for r in uniq]
    else:
        lines += ["", "Every planned run of this table finished."]
    return "\n".join(lines) + "\n"


def _final_scores(runs) -> dict:
    """{run_id: final checkpoint's task score x100} for runs whose record has one (newer records)."""
    if not len(runs) or "final_value" not in runs:
        return {}
    sel = runs[(runs["metric"] == "score") & runs["final_value"].notna()]
    return {r: 100 * float(v) for r, v in zip(sel["run_id"], sel["final_value"])}


def _avg_of(values) -> float:
    vals = list(values)
    if not vals or any(v is None or (isinstance(v, float) and math.isnan(v)) for v in vals):
        return float("nan")
    return float(sum(vals) / len(vals))


def write_tables(config: dict, runs, missing, out_dir: str) -> list[str]:
    from xtc.files import make_dirs, write_text_atomic

    make_dirs(out_dir, "the tables folder")
    paths = []
    for axis in config["axes"]:
        p = os.path.join(out_dir, f"{axis['name']}.md")
        write_text_atomic(p, axis_table(config, axis["name"], runs, missing), "the table")
        paths.append(p)
    return paths


# ----------------------------------------------------------------------------------------------- reproduction

REPRODUCTION_COLUMNS = ["config_id", "kind", "task", "metric", "ref_mean", "ref_sd", "ref_n", "ref_ci_low",
                        "ref_ci_high", "fresh_mean", "fresh_sd", "fresh_n", "diff", "within_ci", "pi_low", "pi_high",
                        "within_pi", "status"]


def reproduction_table(reference, fresh, metrics=("score",)):
    """A fresh run's summary.csv against a committed reference summary.csv, cell by cell (one row per
    configuration and metric, in points = x100): the difference of the means and whether the fresh mean lies
    within the reference's 95% t-interval of the mean (within_ci). With equal seeds a fresh mean of an
    unchanged study falls outside that CI about 17% of the time, so within_pi also gives the 95% prediction
    interval of a fresh mean of fresh_n seeds (ref_mean ± t(ref_n-1) ref_sd sqrt(1/ref_n + 1/fresh_n)).
    A single-run cell (teachers) has no interval: the same seed should reproduce it exactly ('identical').
    status: identical, within CI, outside CI, differs (n=1, no CI), missing in fresh, not in reference."""
    import pandas as pd
    from scipy.stats import t

    keys = ["config_id", "metric"]
    ref = reference[reference["metric"].isin(metrics)] if metrics else reference
    new = fresh[fresh["metric"].isin(metrics)] if metrics else fresh
    merged = ref.merge(new, on=keys, how="outer", suffixes=("_ref", "_new"), indicator=True)
    order: dict = {}
    for k in list(zip(ref["config_id"], ref["metric"])) + list(zip(new["config_id"], new["metric"])):
        order.setdefault(k, len(order))
    merged = merged.assign(_order=[order[k] for k in zip(merged["config_id"], merged["metric"])])
    merged = merged.sort_values("_order", kind="stable")  # the reference's order, then new cells
    rows = []
    for r in merged.to_dict("records"):
        m_ref, m_new = 100 * r.get("mean_ref", float("nan")), 100 * r.get("mean_new", float("nan"))
        sd_ref, sd_new = 100 * r.get("std_ref", float("nan")), 100 * r.get("std_new", float("nan"))
        n_ref = int(r["n_ref"]) if r["_merge"] != "right_only" else 0
        n_new = int(r["n_new"]) if r["_merge"] != "left_only" else 0
        row = {"config_id": r["config_id"], "metric": r["metric"],
               "kind": r["kind_ref"] if r["_merge"] != "right_only" else r["kind_new"],
               "task": r["task_ref"] if r["_merge"] != "right_only" else r["task_new"],
               "ref_mean": m_ref, "ref_sd": sd_ref, "ref_n": n_ref, "fresh_mean": m_new, "fresh_sd": sd_new,
               "fresh_n": n_new, "diff": m_new - m_ref, "ref_ci_low": float("nan"), "ref_ci_high": float("nan"),
               "within_ci": None, "pi_low": float("nan"), "pi_high": float("nan"), "within_pi": None}
        if r["_merge"] == "left_only":
            row["status"] = "missing in fresh"
        elif r["_merge"] == "right_only":
            row["status"] = "not in reference"
        elif n_ref >= 2 and not math.isnan(sd_ref):
            q = float(t.ppf(0.5 + CONFIDENCE / 2, n_ref - 1))
            half = q * sd_ref / math.sqrt(n_ref)
            pi = q * sd_ref * math.sqrt(1 / n_ref + 1 / max(n_new, 1))
            row.update(ref_ci_low=m_ref - half, ref_ci_high=m_ref + half, pi_low=m_ref - pi, pi_high=m_ref + pi)
            row["within_ci"] = bool(row["ref_ci_low"] <= m_new <= row["ref_ci_high"])
            row["within_pi"] = bool(row["pi_low"] <= m_new <= row["pi_high"])
            row["status"] = "identical" if m_new == m_ref else ("within CI" if row["within_ci"] else "outside CI")
        else:
            row["status"] = "identical" if m_new == m_ref else "differs (n=1, no CI)"
        rows.append(row)
    return pd.DataFrame(rows, columns=REPRODUCTION_COLUMNS)


def reproduction_markdown(table, title: str = "Reproduction against the committed reference") -> str:
    """The reproduction table as Markdown: a count per status, then every cell (those outside their CI first)."""
    order = {"outside CI": 0, "differs (n=1, no CI)": 1, "missing in fresh": 2, "not in reference": 3,
             "within CI": 4, "identical": 5}
    counts = table["status"].value_counts()
    lines = [f"## {title}", "",
             "Task scores x100 (mean over seeds). CI: the reference's 95% t-interval of its mean; PI: the 95% "
             "prediction interval of a fresh mean of fresh_n seeds (an unchanged study lands outside the CI ~17% "
             "of the time with equal seeds, outside the PI 5%).", "",
             "Cells: " + ", ".join(f"{counts[s]} {s}" for s in sorted(counts.index, key=lambda s: order.get(s, 9)))
             + f" (of {len(table)}).", "",
             "| configuration | reference | fresh | diff | reference CI | within CI | within PI | status |",
             "|---|---|---|---|---|---|---|---|"]
    tab = table.assign(_o=table["status"].map(lambda s: order.get(s, 9))).sort_values("_o", kind="stable")
    yes_no = {True: "yes", False: "no", None: "—"}
    for r in tab.to_dict("records"):
        ci = "—" if math.isnan(r["ref_ci_low"]) else f"[{r['ref_ci_low']:.1f}, {r['ref_ci_high']:.1f}]"
        lines.append(f"| `{r['config_id']}` | {_fmt(r['ref_mean'])} (n={r['ref_n']}) | "
                     f"{_fmt(r['fresh_mean'])} (n={r['fresh_n']}) | {_fmt(r['diff'], 2)} | {ci} | "
                     f"{yes_no[r['within_ci']]} | {yes_no[r['within_pi']]} | {r['status']} |")
    return "\n".join(lines) + "\n"


def write_reproduction(reference_dir: str, fresh_dir: str, out_csv: str, out_md: str):
    """reference_dir/summary.csv vs fresh_dir/summary.csv -> reproduction.csv and reproduction.md."""
    import pandas as pd

    frames = []
    for what, d in (("reference", reference_dir), ("fresh", fresh_dir)):
        path = os.path.join(d, "summary.csv")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no summary.csv in the {what} folder; point it at a results folder "
                                    "written by `xtc study aggregate`")
        df = pd.read_csv(path)
        lacking = sorted({"config_id", "kind", "task", "metric", "mean", "std", "n"} - set(df.columns))
        if lacking:
            raise ValueError(f"{path}: not a study summary (no column {', '.join(lacking)}); point it at the "
                             "summary.csv written by `xtc study aggregate`")
        frames.append(df)
    table = reproduction_table(*frames)
    from xtc.files import make_dirs, write_csv_atomic, write_text_atomic

    for p in (out_csv, out_md):
        make_dirs(os.path.dirname(os.path.abspath(p)), "the results folder")
    write_csv_atomic(out_csv, table, "the reproduction table")
    write_text_atomic(out_md, reproduction_markdown(table, f"Reproduction: {fresh_dir} against {reference_dir}"),
                      "the reproduction table")
    return table
