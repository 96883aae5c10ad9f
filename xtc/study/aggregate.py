"""Finished runs into tidy CSVs: runs.csv (one row per run and metric), summary.csv (over seeds) and
missing.csv (planned runs without results).

Scores
------
Every metric is kept as written by xtc (a fraction). The *task score* is the GLUE convention: the mean of
the task's GLUE metrics (`SCORE_METRICS`: MCC for CoLA, accuracy for SST-2/QNLI/RTE, F1 and accuracy for
MRPC/QQP, Pearson and Spearman for STS-B, matched and mismatched accuracy for MNLI). `runs.csv` carries it
as the metric `score`; tables, figures and claims show it x100 ("points") and average it over tasks (Avg).
Standard deviations are over seeds with ddof=1 (NaN when n = 1).

Beside each selected checkpoint's dev value, runs.csv carries how it was selected (`selected_by`: "validation",
or "dev" for records that chose on the reported set), the last evaluation's value (`final_value`, at
`final_step`), the validation value, the training-set size, and `collapsed`: the run predicted one class (or one
constant score) for every dev example, from its dev_predictions.json (empty for records without one).
"""
from __future__ import annotations

import json
import math
import os

from xtc.files import make_dirs, write_csv_atomic
from xtc.study.grid import study_runs
from xtc.study.paths import METRICS_FILE, SETTING_COLS, STATE_DIR, benchmark_file, run_dir, run_key, size_file

STD_DDOF = 1

SCORE_METRICS = {"cola": ("mcc",), "sst2": ("accuracy",), "mrpc": ("f1", "accuracy"),
                 "stsb": ("pearson", "spearman"), "qqp": ("f1", "accuracy"), "mnli": ("accuracy", "accuracy_mm"),
                 "qnli": ("accuracy",), "rte": ("accuracy",), "wnli": ("accuracy",)}


def score_metrics(task: str, config: dict | None = None) -> tuple[str, ...]:
    """The metrics a task's score averages: SCORE_METRICS for a GLUE task; a task of your own (the config's
    task_specs) averages the metrics its spec lists."""
    if task in SCORE_METRICS:
        return SCORE_METRICS[task]
    from xtc.study.config import task_of

    return tuple(task_of(config, task).metrics)


def task_score(task: str, metrics: dict, config: dict | None = None) -> float | None:
    """Task score: the mean of the task's metrics (GLUE: see SCORE_METRICS; others: score_metrics); None if one
    is absent."""
    vals = [metrics.get(m) for m in score_metrics(task, config)]
    if any(v is None or not isinstance(v, (int, float)) or math.isnan(v) for v in vals):
        return None
    return float(sum(vals) / len(vals))


def read_benchmark(path: str) -> dict:
    """Snakemake benchmark TSV -> {'wall_s', 'max_rss_mb'} (mean over its repeats); {} when absent."""
    try:
        with open(path) as f:
            lines = [ln.rstrip("\n").split("\t") for ln in f if ln.strip()]
    except OSError:
        return {}
    if len(lines) < 2:
        return {}
    head, rows = lines[0], lines[1:]

    def col(name):
        vals = []
        for r in rows:
            try:
                vals.append(float(r[head.index(name)]))
            except (ValueError, IndexError):
                pass
        return sum(vals) / len(vals) if vals else float("nan")

    return {"wall_s": col("s") if "s" in head else float("nan"),
            "max_rss_mb": col("max_rss") if "max_rss" in head else float("nan")}


def _with_score(task: str, metrics, config: dict) -> dict:
    """A record's metrics (numbers only) and their task `score`; {} when the record has none (older records)."""
    out = {k: float(v) for k, v in (metrics or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    score = task_score(task, out, config) if out else None
    if score is not None:
        out["score"] = score
    return out


def run_collapsed(task: str, run_dir: str, config: dict):
    """Whether a run predicted one class for every dev example (a constant score for regression), from its
    dev_predictions.json (the selected checkpoint); None when it has none (older records)."""
    from xtc.study.config import task_of
    from xtc.study.stats import is_collapsed, read_predictions

    rec = read_predictions(run_dir)
    if rec is None:
        return None
    return is_collapsed(rec["selected"], task_of(config, task).is_regression)


class IncompleteStudyError(ValueError):
    """Planned runs without results, where the study must be complete."""


def read_json(path: str):
    with open(path) as f:
        return json.load(f)


RUNS_COLUMNS = ["run_id", "config_id", "kind", "axes", *SETTING_COLS, "budget", "teacher_layers", "metric",
                "value", "is_selection_metric", "selected_by", "best_step", "final_step", "final_value",
                "validation_value", "collapsed", "train_examples", "wall_s", "max_rss_mb", "train_wall_s",
                "train_tokens_per_s",
                "fp32_bytes", "quantized_bytes", "packed_bytes", "packed_file_bytes", "model_bytes",
                "size_source", "teacher_fp32_bytes", "ratio_to_teacher", "run_dir"]
MISSING_COLUMNS = ["run_id", "config_id", "kind", "axes", *SETTING_COLS, "reason", "run_dir"]


def collect(config: dict, runs_dir: str):
    """Read every planned run under `runs_dir`. Returns (runs, missing): `runs` is tidy (one row per run and
    metric, plus the derived metric `score`); `missing` lists planned runs without a readable metrics.json
    (and quantized students whose export is absent, which only lose their packed size)."""
    import pandas as pd

    plan = study_runs(config)
    rows, missing = [], []
    teacher_bytes: dict[str, float] = {}
    for r in plan.to_dict("records"):
        d = run_dir(runs_dir, r["run_id"])
        base = {k: r[k] for k in ("run_id", "config_id", "kind", "axes", *SETTING_COLS, "budget")}
        mfile = os.path.join(d, METRICS_FILE)
        try:
            rec = read_json(mfile)
            if rec.get("task") != r["task"] or not isinstance(rec.get("metrics"), dict):
                raise ValueError(f"{METRICS_FILE} is for task {rec.get('task')!r}, not {r['task']!r}")
        except FileNotFoundError:
            reason = ("unfinished (resume state present)" if os.path.isdir(os.path.join(d, STATE_DIR))
                      else f"not run (no {METRICS_FILE})")
            missing.append({**base, "reason": reason, "run_dir": d})
            continue
        except (OSError, ValueError) as exc:
            missing.append({**base, "reason": f"unreadable {METRICS_FILE}: {exc}", "run_dir": d})
            continue
        bench = read_benchmark(benchmark_file(runs_dir, r["run_id"]))
        size = rec.get("size") or {}
        if size.get("teacher_fp32_bytes"):
            teacher_bytes[r["task"]] = float(size["teacher_fp32_bytes"])
        packed = packed_file = None
        if r["kind"] == "student" and r["wbits"] < 32:
            try:
                rep = read_json(size_file(runs_dir, run_key(r)))
                packed, packed_file = float(rep["weights_bytes"]), float(rep["file_bytes"])
            except (OSError, ValueError, KeyError):
                missing.append({**base, "reason": "no export (packed size unknown)",
                                "run_dir": os.path.dirname(size_file(runs_dir, run_key(r)))})
        layers = (rec.get("layers") or {}).get("teacher_layers")
        common = {**base, "teacher_layers": ",".join(map(str, layers)) if layers else "",
                  "wall_s": bench.get("wall_s", float("nan")), "max_rss_mb": bench.get("max_rss_mb", float("nan")),
                  "train_wall_s": rec.get("wall_seconds"), "train_tokens_per_s": rec.get("train_tokens_per_second"),
                  "fp32_bytes": size.get("fp32_bytes"), "quantized_bytes": size.get("quantized_bytes"),
                  "packed_bytes": packed, "packed_file_bytes": packed_file,
                  "teacher_fp32_bytes": size.get("teacher_fp32_bytes"), "run_dir": d}
        metrics = _with_score(r["task"], rec["metrics"], config)
        final = _with_score(r["task"], rec.get("final_metrics"), config)
        valid = _with_score(r["task"], rec.get("validation_metrics"), config)
        common.update(selected_by=rec.get("selected_by", "dev"), best_step=rec.get("best_step"),
                      final_step=rec.get("final_step"), collapsed=run_collapsed(r["task"], d, config),
                      train_examples=((rec.get("data") or {}).get("train") or {}).get("n"))
        for metric, value in metrics.items():
            rows.append({**common, "metric": metric, "value": value, "final_value": final.get(metric),
                         "validation_value": valid.get(metric),
                         "is_selection_metric": metric == rec.get("selection_metric")})
    runs = pd.DataFrame(rows, columns=[c for c in RUNS_COLUMNS])
    if len(runs):
        # the teacher's size comes from its students' metrics.json (finetune does not record it)
        tb = runs["task"].map(teacher_bytes)
        runs["teacher_fp32_bytes"] = runs["teacher_fp32_bytes"].fillna(tb)
        is_t = runs["kind"] == "teacher"
        runs.loc[is_t, "fp32_bytes"] = runs.loc[is_t, "teacher_fp32_bytes"]
        runs.loc[is_t, "quantized_bytes"] = runs.loc[is_t, "teacher_fp32_bytes"]
        quant = runs["wbits"] < 32
        runs["model_bytes"] = runs["fp32_bytes"].where(~quant, runs["packed_bytes"].fillna(runs["quantized_bytes"]))
        runs["size_source"] = "fp32"
        runs.loc[quant & runs["packed_bytes"].notna(), "size_source"] = "packed"
        runs.loc[quant & runs["packed_bytes"].isna(), "size_source"] = "theoretical"
        runs.loc[runs["model_bytes"].isna(), "size_source"] = ""
        runs["ratio_to_teacher"] = runs["teacher_fp32_bytes"] / runs["model_bytes"]
    return runs, pd.DataFrame(missing, columns=MISSING_COLUMNS)


SUMMARY_KEYS = ["config_id", "kind", "axes", "task", "depth", "wbits", "abits", "kd", "epochs", "budget", "lr",
                "da", "init", "metric"]


def summarize(config: dict, runs):
    """Group runs over seeds: mean, std (ddof=1, column std_ddof), n finished seeds, n_planned, the seeds,
    and mean wall time, peak memory and sizes."""
    import pandas as pd

    cols = [*SUMMARY_KEYS, "mean", "std", "std_ddof", "n", "n_planned", "seeds", "complete", "wall_s_mean",
            "max_rss_mb_mean", "model_bytes", "size_source", "ratio_to_teacher", "final_mean", "n_collapsed",
            "selected_by"]
    if not len(runs):
        return pd.DataFrame(columns=cols)
    plan = study_runs(config)
    planned = plan.groupby("config_id")["seed"].nunique()
    g = runs.groupby(SUMMARY_KEYS, sort=False, dropna=False)
    out = g.agg(mean=("value", "mean"), std=("value", lambda v: v.std(ddof=STD_DDOF) if len(v) > 1 else float("nan")),
                n=("value", "size"), seeds=("seed", lambda s: ";".join(str(int(x)) for x in sorted(s))),
                wall_s_mean=("wall_s", "mean"), max_rss_mb_mean=("max_rss_mb", "mean"),
                model_bytes=("model_bytes", "mean"), size_source=("size_source", "first"),
                ratio_to_teacher=("ratio_to_teacher", "mean"), final_mean=("final_value", "mean"),
                n_collapsed=("collapsed", lambda c: int(c.eq(True).sum())),  # None: unknown (no predictions)
                selected_by=("selected_by", lambda v: ",".join(sorted(set(v.dropna().astype(str)))))).reset_index()
    out["std_ddof"] = STD_DDOF
    out["n_planned"] = out["config_id"].map(planned).fillna(out["n"]).astype(int)
    out["complete"] = out["n"] >= out["n_planned"]
    return out[cols]


def write_results(config: dict, runs_dir: str, out_dir: str, allow_incomplete: bool = False) -> dict:
    """runs.csv, summary.csv and missing.csv under out_dir; returns the frames. A planned run (or export)
    without results raises IncompleteStudyError before anything is written, unless `allow_incomplete`: then
    missing.csv lists it and the tables mark it."""
    runs, missing = collect(config, runs_dir)
    if len(missing) and not allow_incomplete:
        first = "; ".join(f"{r['run_id']} ({r['reason']})" for r in missing.head(3).to_dict("records"))
        raise IncompleteStudyError(f"{len(missing)} planned runs have no results under {runs_dir}, e.g. {first}; "
                                   f"train them (rerun the workflow) or accept an incomplete study with "
                                   f"--allow-incomplete (workflow: --config allow_incomplete=true)")
    summary = summarize(config, runs)
    make_dirs(out_dir, "the results folder")
    for name, frame in (("runs.csv", runs), ("summary.csv", summary), ("missing.csv", missing)):
        write_csv_atomic(os.path.join(out_dir, name), frame, f"the aggregated {name}")
    return {"runs": runs, "summary": summary, "missing": missing}


def read_results(results_dir: str):
    import pandas as pd

    # text columns stay text: an empty budget is "", not NaN, and a single teacher layer "5" is not 5.0
    text = ("budget", "teacher_layers", "size_source", "selected_by")
    runs = pd.read_csv(os.path.join(results_dir, "runs.csv"), dtype=dict.fromkeys(text, str))
    runs = runs.fillna(dict.fromkeys(text, ""))
    mpath = os.path.join(results_dir, "missing.csv")
    missing = pd.read_csv(mpath) if os.path.isfile(mpath) else pd.DataFrame(columns=MISSING_COLUMNS)
    return runs, missing
