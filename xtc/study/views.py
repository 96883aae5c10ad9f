"""Views of the results shared by tables, claims and figures: per axis, one row per (axis point, task) with
scores x100; per axis point, the average over tasks; the teacher's scores; and the labels they print."""
from __future__ import annotations

import math

from xtc.study.aggregate import STD_DDOF, score_metrics
from xtc.study.grid import axis_tasks, members
from xtc.study.paths import config_key, teacher_run_id

TASK_TITLES = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "qqp": "QQP", "mnli": "MNLI",
               "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI"}


def task_title(task: str) -> str:
    """A task's name in tables and figures: GLUE's spelling, a task of your own as named."""
    return TASK_TITLES.get(task, task)


METRIC_ABBREV = {"accuracy": "acc", "f1": "F1", "mcc": "MCC", "pearson": "P", "spearman": "S",
                 "accuracy_mm": "mm"}


def axis_view(config: dict, axis: str, runs, missing=None):
    """One row per (axis point, task): the varied raw values, the config_id, task score mean/std/n (x100),
    each GLUE metric's mean (x100), model size, and the missing run ids of that cell."""
    import pandas as pd

    m = members(config)
    m = m[m["axis"] == axis]
    if not len(m):
        return pd.DataFrame()
    vcols = [c for c in m.columns if c.startswith("v_")]
    vcols = [c for c in vcols if m[c].notna().any()]
    present = runs[runs["metric"] == "score"].set_index("run_id")["value"] if len(runs) else pd.Series(dtype=float)
    metric_vals = {}
    if len(runs):
        for (rid, metric), v in runs.set_index(["run_id", "metric"])["value"].items():
            metric_vals[(rid, metric)] = v
    sizes = runs.drop_duplicates("run_id").set_index("run_id")[["model_bytes", "size_source", "teacher_fp32_bytes"]] \
        if len(runs) else None
    rows = []
    for (point, task), grp in m.groupby(["point", "task"], sort=False):
        rids = list(dict.fromkeys(grp["run_id"]))
        scores = [100 * present[r] for r in rids if r in present.index]
        row = {"axis": axis, "point": point, **{c: grp[c].iloc[0] for c in vcols}, "task": task,
               "config_id": config_key(rids[0]), "kind": grp["kind"].iloc[0], "depth": grp["depth"].iloc[0],
               "wbits": grp["wbits"].iloc[0], "epochs": grp["epochs"].iloc[0], "lr": grp["lr"].iloc[0],
               "kd": grp["kd"].iloc[0], "da": grp["da"].iloc[0], "budget": grp["budget"].iloc[0],
               "n_planned": len(rids), "n": len(scores),
               "score": float(sum(scores) / len(scores)) if scores else float("nan"),
               "score_std": float(pd.Series(scores).std(ddof=STD_DDOF)) if len(scores) > 1 else float("nan"),
               "seed_scores": {int(s): 100 * present[r] for r, s in zip(grp["run_id"], grp["seed"])
                               if r in present.index},
               "seed_runs": {int(s): r for r, s in zip(grp["run_id"], grp["seed"]) if r in present.index},
               "missing": [r for r in rids if r not in present.index]}
        for metric in score_metrics(task, config):
            vals = [100 * metric_vals[(r, metric)] for r in rids if (r, metric) in metric_vals]
            row[f"m_{metric}"] = float(sum(vals) / len(vals)) if vals else float("nan")
        if sizes is not None:
            have = [r for r in rids if r in sizes.index]
            row["model_bytes"] = float(sizes.loc[have, "model_bytes"].mean()) if have else float("nan")
            row["size_source"] = sizes.loc[have[0], "size_source"] if have else ""
            row["teacher_fp32_bytes"] = float(sizes.loc[have, "teacher_fp32_bytes"].mean()) if have else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def teacher_view(config: dict, runs):
    """Per task: the teacher's score (x100), its metrics and size; NaN where the teacher is missing."""
    out = {}
    for task in config["tasks"]:
        rid = teacher_run_id(task)
        sel = runs[(runs["run_id"] == rid)] if len(runs) else runs
        vals = dict(zip(sel["metric"], sel["value"])) if len(sel) else {}
        out[task] = {"score": 100 * vals["score"] if "score" in vals else float("nan"),
                     **{f"m_{m}": 100 * vals[m] if m in vals else float("nan") for m in score_metrics(task, config)},
                     "bytes": float(sel["teacher_fp32_bytes"].iloc[0]) if len(sel) else float("nan")}
    return out


def point_averages(config: dict, view):
    """Per axis point: Avg = mean over the config's tasks of the task score (NaN unless every task has one),
    its std over seeds (per-seed averages over tasks, seeds present for every task), and completeness."""
    import pandas as pd

    tasks = axis_tasks(config, view["axis"].iloc[0]) if len(view) else list(config["tasks"])
    rows = []
    for point, grp in view.groupby("point", sort=False):
        by_task = {r["task"]: r for r in grp.to_dict("records")}
        scores = [by_task[t]["score"] for t in tasks if t in by_task]
        avg = float(sum(scores) / len(scores)) if len(scores) == len(tasks) and not any(map(math.isnan, scores)) \
            else float("nan")
        seeds = set.intersection(*(set(by_task[t]["seed_scores"]) for t in tasks)) if len(by_task) == len(tasks) \
            else set()
        per_seed = [sum(by_task[t]["seed_scores"][s] for t in tasks) / len(tasks) for s in sorted(seeds)]
        first = grp.iloc[0]
        rows.append({"point": point, **{c: first[c] for c in grp.columns if c.startswith("v_")},
                     "depth": first["depth"], "wbits": first["wbits"], "kind": first["kind"],
                     "avg": avg, "avg_std": float(pd.Series(per_seed).std(ddof=STD_DDOF)) if len(per_seed) > 1
                     else float("nan"), "n_seeds_all_tasks": len(per_seed),
                     "complete": all(not by_task[t]["missing"] for t in tasks if t in by_task)
                     and len(by_task) == len(tasks),
                     "model_bytes": float(grp["model_bytes"].mean()) if "model_bytes" in grp else float("nan"),
                     "size_source": ",".join(sorted(set(grp["size_source"]) - {""})) if "size_source" in grp else ""})
    return pd.DataFrame(rows)


def teacher_avg(config: dict, teacher: dict, tasks=None) -> float:
    s = [teacher[t]["score"] for t in (tasks or config["tasks"])]
    return float(sum(s) / len(s)) if not any(map(math.isnan, s)) else float("nan")


def axis_config(config: dict, name: str) -> dict | None:
    """The config's axis of that name, or None."""
    return next((a for a in config["axes"] if a["name"] == name), None)


def isnan(x) -> bool:
    """None or a float NaN (a missing score or size)."""
    return x is None or (isinstance(x, float) and math.isnan(x))


HISTORY_COLUMNS = ["run_id", "config_id", "kind", "task", "depth", "wbits", "abits", "kd", "epochs", "budget", "lr",
                   "da", "init", "seed", "stage", "step", "epoch", "metric", "value"]


def collect_history(config: dict, runs_dir: str):
    """Every planned run's evaluation history (metrics.json `history`: one entry per evaluation, with the
    optimizer step) as a tidy table, one row per (run, evaluation, metric) plus the derived task `score`
    (the mean of the task's GLUE metrics, as in runs.csv). Runs without a readable metrics.json are skipped
    (aggregate's missing.csv lists them)."""
    import json
    import os

    import pandas as pd

    from xtc.study.aggregate import task_score
    from xtc.study.grid import study_runs

    rows = []
    for r in study_runs(config).to_dict("records"):
        try:
            with open(os.path.join(runs_dir, r["run_id"], "metrics.json")) as f:
                history = json.load(f).get("history") or []
        except (OSError, ValueError):
            continue
        base = {k: r[k] for k in HISTORY_COLUMNS[:14]}
        for h in history:
            metrics = {k: float(v) for k, v in (h.get("metrics") or {}).items() if isinstance(v, (int, float))}
            score = task_score(r["task"], metrics, config)
            if score is not None:
                metrics["score"] = score
            for metric, value in metrics.items():
                rows.append({**base, "stage": h.get("stage", ""), "step": int(h["step"]),
                             "epoch": float(h.get("epoch", float("nan"))), "metric": metric, "value": value})
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS)


def write_history(config: dict, runs_dir: str, out_path: str):
    """history.csv (see collect_history); returns the frame."""
    import os

    hist = collect_history(config, runs_dir)
    from xtc.files import make_dirs, write_csv_atomic

    make_dirs(os.path.dirname(os.path.abspath(out_path)), "the results folder")
    write_csv_atomic(out_path, hist, "the evaluation history")
    return hist


def read_history(results_dir: str):
    """results_dir/history.csv, or None when the results have no history (older aggregations)."""
    import os

    import pandas as pd

    path = os.path.join(results_dir, "history.csv")
    if not os.path.isfile(path):
        return None
    hist = pd.read_csv(path)
    hist["budget"] = hist["budget"].fillna("").astype(str)
    return hist
