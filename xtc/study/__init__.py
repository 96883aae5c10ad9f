"""The XTC study as data: the run grid, aggregation, paper-style tables, the claims check and figures.

The Snakemake workflow (`Snakefile`, `workflow/rules/*.smk`) and the `xtc study ...` commands both use this
module, so a run's folder name, its settings and its place in the study are defined once, here.

Grid (one factor at a time around the XTC recipe, runs shared between axes)
---------------------------------------------------------------------------
A config names an *anchor* setting (the recipe: full depth, 1-bit weights, 8-bit activations, one-stage KD,
the long budget, the base learning rate, no augmentation) and a list of *axes*. An axis varies some factors
(`vary`: factor -> list of values; several factors are crossed) and may fix others (`set`); every other
factor keeps its anchor value. Each combination, for every task and seed, becomes a run. Three rules map a
setting to a run, so that equal settings give the same run and are trained once:

* fp32 at the teacher's depth is the teacher itself (`xtc finetune`, once per task, shared by all seeds);
* fp32 below the teacher's depth is an XTC step-1 run: `xtc compress --layers k --wbits 32` with the
  `step1` settings of the config (budget, learning rate, KD mode; no augmentation), whatever the axis;
* a quantized student below the teacher's depth is XTC step 2: `--init <its step-1 run> --wbits b`;
  at the teacher's depth it starts from the teacher (`init~teacher`).

Rows are then deduplicated on the run folder; the `axes` column lists every axis a run belongs to (the
anchor row belongs to all of them). A student's folder names every setting, e.g.
`student/task~mrpc/depth~6/wbits~1/abits~8/kd~one-stage/epochs~3/lr~5e-05/da~off/init~teacher/seed~1`;
`run_relpath` and `parse_run_relpath` convert both ways, and the same column order is what Snakemake's
`Paramspace` turns into wildcards.

Scores
------
Every metric is kept as written by xtc (a fraction). The *task score* is the GLUE convention: the mean of
the task's GLUE metrics (`SCORE_METRICS`: MCC for CoLA, accuracy for SST-2/QNLI/RTE, F1 and accuracy for
MRPC/QQP, Pearson and Spearman for STS-B, matched and mismatched accuracy for MNLI). `runs.csv` carries it
as the metric `score`; tables, figures and claims show it x100 ("points") and average it over tasks (Avg).
Standard deviations are over seeds with ddof=1 (NaN when n = 1).
"""
from __future__ import annotations

import copy
import itertools
import json
import math
import os
import sys

from xtc.tasks import TASKS
from xtc.study.paths import (STUDENT_COLS, augment_file, benchmark_file, config_key, export_file, fmt_value, log_file,
                             parse_run_relpath, parse_value, run_key, run_relpath, size_file, student_key, teacher_dir)
from xtc.study.config import (KD_MODES, KNOWN_AXES, SCHEMA_PATH, _fill_defaults, _norm_da, _schema_error_message,
                              check_config, ConfigError, dump_config, load_config, merge_configs, resolve_epochs,
                              resolve_glue_dir, validate_config)
from xtc.study.grid import (FACTORS, SETTING_COLS, axis_tasks, members, paramspace_frame, setting_row, step1_row,
                            study_runs, teacher_row)
from xtc.study.flags import augment_flags, compress_flags, data_flags
from xtc.study.aggregate import (MISSING_COLUMNS, RUNS_COLUMNS, SCORE_METRICS, STD_DDOF, SUMMARY_KEYS, _read_json,
                                 collect, read_benchmark, read_results, summarize, task_score, write_results)
from xtc.study.views import (METRIC_ABBREV, TASK_TITLES, _axis, _nan, axis_view, point_averages, teacher_avg,
                             teacher_view)
from xtc.study.tables import FACTOR_TITLES, _anchor_text, _fmt, _metric_header, axis_table, point_label, write_tables
from xtc.study.claims import (CLAIMS, VERDICTS, _claim, check_claims, claim_budget, claim_da, claim_depth, claim_kd,
                              claim_size)
from xtc.study.figures import (FIGURES, WBITS_STYLE, _line_panels, _no_data, _panel_title, _panels, _save,
                               _teacher_line, fig_budget, fig_depth, fig_kd, fig_lr, fig_size, make_figures)
from xtc.study.plan import GLUE_DEV_SIZE, GLUE_TOKENS, GLUE_TRAIN_SIZE, estimate_cost
from xtc.study.versions import write_versions


# ---------------------------------------------------------------------------------------------------------
# CLI: xtc study ...


def _cfg(a) -> dict:
    overrides = {}
    for kv in a.set or []:
        import yaml

        k, _, v = kv.partition("=")
        cur = overrides
        keys = k.split(".")
        for part in keys[:-1]:
            cur = cur.setdefault(part, {})
        cur[keys[-1]] = yaml.safe_load(v)
    return load_config(a.config, overrides)


def _add_config(p):
    p.add_argument("--config", action="append", required=True,
                   help="study config YAML; repeat to merge (later files win), as with Snakemake's --configfile")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value, e.g. seeds=[1]")


def cmd_runs(a) -> None:
    runs = study_runs(_cfg(a))
    if a.kind:
        runs = runs[runs["kind"] == a.kind]
    if a.json:
        json.dump(runs.to_dict("records"), sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        runs.to_csv(sys.stdout, index=False)


def cmd_plan(a) -> None:
    config = _cfg(a)
    est = estimate_cost(config)
    runs = study_runs(config)
    by_job = est.groupby("job")[["compute_s", "startup_s", "wall_s"]].sum().round(1)
    counts = est.groupby("job").size()
    out = {"runs": {"teachers": int((runs["kind"] == "teacher").sum()),
                    "students": int((runs["kind"] == "student").sum())},
           "jobs": {j: {"count": int(counts[j]), **{k: float(v) for k, v in r.items()}} for j, r in by_job.iterrows()},
           "students_per_axis": {ax["name"]: int(runs["axes"].str.split(";").map(lambda s, n=ax["name"]: n in s).sum())
                                 for ax in config["axes"]},
           "estimated_wall_minutes": round(float(est["wall_s"].sum()) / 60, 1),
           "assumptions": config["cost"]}
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


def cmd_aggregate(a) -> None:
    config = _cfg(a)
    res = write_results(config, a.runs_dir, a.out_dir)
    write_versions(a.runs_dir, os.path.join(a.out_dir, "versions.json"))
    n_done = res["runs"]["run_id"].nunique() if len(res["runs"]) else 0
    miss = res["missing"]
    not_run = miss[~miss["reason"].str.startswith("no export")] if len(miss) else miss
    print(json.dumps({"finished_runs": int(n_done), "missing_runs": int(len(not_run)),
                      "missing_exports": int(len(miss) - len(not_run)),
                      "out": [os.path.join(a.out_dir, f) for f in ("runs.csv", "summary.csv", "missing.csv")]},
                     indent=1))
    for r in not_run.to_dict("records"):
        print(f"missing: {r['run_id']} ({r['reason']})", file=sys.stderr)


def cmd_tables(a) -> None:
    config = _cfg(a)
    runs, missing = read_results(a.results_dir)
    print("\n".join(write_tables(config, runs, missing, a.out_dir)))


def cmd_claims(a) -> None:
    config = _cfg(a)
    runs, missing = read_results(a.results_dir)
    claims = check_claims(config, runs, missing)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    claims.to_csv(a.out, index=False)
    for r in claims.to_dict("records"):
        print(f"finding {r['finding']}: {r['verdict']} -- {r['evidence']}")


def cmd_figures(a) -> None:
    config = _cfg(a)
    runs, _ = read_results(a.results_dir)
    print("\n".join(make_figures(config, runs, a.out_dir)))


def cmd_all(a) -> None:
    config = _cfg(a)
    res = write_results(config, a.runs_dir, a.results_dir)
    runs, missing = read_results(a.results_dir)
    write_tables(config, runs, missing, os.path.join(a.results_dir, "tables"))
    check_claims(config, runs, missing).to_csv(os.path.join(a.results_dir, "claims.csv"), index=False)
    make_figures(config, runs, a.figures_dir)
    print(json.dumps({"finished_runs": int(res["runs"]["run_id"].nunique()) if len(res["runs"]) else 0,
                      "missing": int(len(res["missing"])), "results": a.results_dir, "figures": a.figures_dir}))


def register(sub) -> None:
    """Add `xtc study ...` to the xtc command line."""
    s = sub.add_parser("study", help="the XTC study: run grid, aggregation, tables, claims, figures",
                       description="Library behind the Snakemake workflow: expand a study config into its runs, "
                       "aggregate finished runs (tolerating missing ones), write tables, the claims check and "
                       "figures.")
    ss = s.add_subparsers(dest="study_command", required=True, metavar="STUDY_COMMAND")

    p = ss.add_parser("runs", help="the unique runs of a config (CSV, or JSON with --json)")
    _add_config(p)
    p.add_argument("--kind", choices=["teacher", "student"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_runs)

    p = ss.add_parser("plan", help="number of runs per axis and a rough cost estimate (JSON)")
    _add_config(p)
    p.set_defaults(fn=cmd_plan)

    p = ss.add_parser("aggregate", help="runs.csv (tidy), summary.csv (over seeds) and missing.csv")
    _add_config(p)
    p.add_argument("--runs-dir", required=True, help="the runs root (config paths.runs)")
    p.add_argument("--out-dir", required=True, help="results folder")
    p.set_defaults(fn=cmd_aggregate)

    p = ss.add_parser("tables", help="one Markdown table per axis from runs.csv")
    _add_config(p)
    p.add_argument("--results-dir", required=True)
    p.add_argument("--out-dir", required=True)
    p.set_defaults(fn=cmd_tables)

    p = ss.add_parser("claims", help="verdicts on the recipe's five findings (CSV)")
    _add_config(p)
    p.add_argument("--results-dir", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_claims)

    p = ss.add_parser("figures", help="PNG and PDF figures from runs.csv")
    _add_config(p)
    p.add_argument("--results-dir", required=True)
    p.add_argument("--out-dir", required=True)
    p.set_defaults(fn=cmd_figures)

    p = ss.add_parser("all", help="aggregate + tables + claims + figures in one go (e.g. on a partial tree)")
    _add_config(p)
    p.add_argument("--runs-dir", required=True)
    p.add_argument("--results-dir", required=True)
    p.add_argument("--figures-dir", required=True)
    p.set_defaults(fn=cmd_all)
