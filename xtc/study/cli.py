"""`xtc study ...`: the subcommands, added to the xtc command line (xtc/cli.py) by `register`."""
from __future__ import annotations

import json
import os
import sys

from contextlib import ExitStack

from xtc.files import exclusive_writer, make_dirs, write_csv_atomic
from xtc.study.aggregate import read_results, write_results
from xtc.study.claims import check_claims
from xtc.study.config import ConfigError, load_config
from xtc.study.curves import write_plateaus
from xtc.study.diagnostics import write_diagnostics
from xtc.study.figures import FLIP_SHARE_FIGURE, fig_flip_share, make_figures
from xtc.study.grid import study_runs
from xtc.study.plan import estimate_cost, task_sizes
from xtc.study.tables import write_reproduction, write_tables
from xtc.study.versions import write_versions
from xtc.study.views import read_history, write_history

CURVES_FILE = "learning_curves.csv"  # the plateau tests of the budget axis (xtc.study.curves)
HISTORY_FILE = "history.csv"  # each run's evaluation history, beside runs.csv (views.collect_history)
DIAGNOSTICS_FILE = "diagnostics.csv"  # the runs' diagnostics at each evaluation (xtc.study.diagnostics)


def _cfg(a) -> dict:
    """The validated study config of --config, with the --set overrides (YAML values, dotted keys)."""
    import yaml

    overrides: dict = {}
    for kv in a.set or []:
        k, sep, v = kv.partition("=")
        if not sep or not k:
            raise ConfigError(f"--set {kv!r}: write KEY=VALUE, e.g. --set seeds=[1] or --set train.batch_size=16")
        cur = overrides
        keys = k.split(".")
        for part in keys[:-1]:
            cur = cur.setdefault(part, {})
        cur[keys[-1]] = yaml.safe_load(v)
    return load_config(a.config, overrides)


def _add_config(p):
    p.add_argument("--config", required=True,
                   help="study config YAML: a complete profile (workflow/config/*.yaml) or the study-config.yaml "
                   "the workflow writes next to the results")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value, e.g. seeds=[1]")


def _add_allow_incomplete(p):
    p.add_argument("--allow-incomplete", action="store_true",
                   help="aggregate even when planned runs have no results (missing.csv lists them, the tables "
                   "mark them); without it a missing run is an error")


def _writers(*targets: str) -> ExitStack:
    """One writer per output: the OS locks of the folders and files a study command writes (xtc.files)."""
    stack = ExitStack()
    for t in targets:
        new, d = [], os.path.abspath(t)
        while not os.path.exists(d):  # the folders this command creates, deepest first
            new.append(d)
            d = os.path.dirname(d)
        stack.callback(_remove_if_empty, new)  # a command that fails leaves no empty output folder behind
        make_dirs(os.path.dirname(os.path.abspath(t)), "the output folder")  # where its lock file goes
        stack.enter_context(exclusive_writer(t, "study output"))
    return stack


def _remove_if_empty(folders: list[str]) -> None:
    for folder in folders:
        try:
            os.rmdir(folder)
        except FileNotFoundError:  # never made
            continue
        except OSError:  # not empty: the outputs
            return


def cmd_check(a) -> None:
    config = _cfg(a)
    runs = study_runs(config)
    print(f"{a.config}: valid study config ({config.get('profile', 'no profile name')}): "
          f"{int((runs['kind'] == 'teacher').sum())} teachers, {int((runs['kind'] == 'student').sum())} students")


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
           # the originals each task's students learn from (claim 3.small needs tasks of different sizes)
           "train_examples": task_sizes(config),
           "estimated_wall_minutes": round(float(est["wall_s"].sum()) / 60, 1),
           "assumptions": config["cost"]}
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


def cmd_aggregate(a) -> None:
    config = _cfg(a)
    with _writers(a.out_dir):
        res = write_results(config, a.runs_dir, a.out_dir, allow_incomplete=a.allow_incomplete)
        write_history(config, a.runs_dir, os.path.join(a.out_dir, HISTORY_FILE))
        write_versions(a.runs_dir, os.path.join(a.out_dir, "versions.json"))
    n_done = res["runs"]["run_id"].nunique() if len(res["runs"]) else 0
    miss = res["missing"]
    not_run = miss[~miss["reason"].str.startswith("no export")] if len(miss) else miss
    print(json.dumps({"finished_runs": int(n_done), "missing_runs": int(len(not_run)),
                      "missing_exports": int(len(miss) - len(not_run)),
                      "out": [os.path.join(a.out_dir, f) for f in ("runs.csv", "summary.csv", "missing.csv",
                                                                   HISTORY_FILE, "versions.json")]},
                     indent=1))
    for r in not_run.to_dict("records"):
        print(f"missing: {r['run_id']} ({r['reason']})", file=sys.stderr)


def cmd_tables(a) -> None:
    config = _cfg(a)
    runs, missing = read_results(a.results_dir)
    with _writers(a.out_dir):
        print("\n".join(write_tables(config, runs, missing, a.out_dir)))


def cmd_claims(a) -> None:
    config = _cfg(a)
    runs, missing = read_results(a.results_dir)
    claims = check_claims(config, runs, missing)
    make_dirs(os.path.dirname(os.path.abspath(a.out)), "the results folder")
    with _writers(a.out):
        write_csv_atomic(a.out, claims, "the claims table")
    for r in claims.to_dict("records"):
        print(f"claim {r['claim']} [{r['task']}, {r['role']}]: {r['verdict']} -- {r['evidence']}")


def cmd_figures(a) -> None:
    config = _cfg(a)
    runs, _ = read_results(a.results_dir)
    with _writers(a.out_dir):
        print("\n".join(make_figures(config, runs, a.out_dir, history=read_history(a.results_dir))))


def cmd_curves(a) -> None:
    config = _cfg(a)
    history = read_history(a.results_dir)
    if history is None:
        raise ValueError(f"--results-dir {a.results_dir}: no {HISTORY_FILE} there; give the folder `xtc study "
                         "aggregate` wrote (it writes history.csv beside runs.csv)")
    with _writers(a.out_csv, a.out_md):
        table = write_plateaus(config, history, a.out_csv, a.out_md)
    for r in table.to_dict("records"):
        print(f"{r['task']} W{r['wbits']}: {r['verdict']} (late gain {r['gain']:+.2f} [{r['ci_low']:+.2f}, "
              f"{r['ci_high']:+.2f}], n={r['n']})")


def cmd_diagnostics(a) -> None:
    config = _cfg(a)
    flip = os.path.join(a.figures_dir, FLIP_SHARE_FIGURE)  # its own figure files, not the folder: rule figures
    with _writers(a.out_csv, a.out_md, flip + ".png", flip + ".pdf"):  # writes beside it at the same time
        diag = write_diagnostics(config, a.runs_dir, a.out_csv, a.out_md)
        figures = fig_flip_share(config, diag, a.figures_dir)
    print("\n".join([a.out_csv, a.out_md, *figures]))


def cmd_reproduce(a) -> None:
    for flag, path, example in (("--out-csv", a.out_csv, "reproduction.csv"), ("--out-md", a.out_md, "reproduction.md")):
        if os.path.isdir(path):
            raise ValueError(f"{flag} {path}: is a folder; give a file name, e.g. {os.path.join(path, example)}")
    if os.path.abspath(a.out_csv) == os.path.abspath(a.out_md):
        raise ValueError(f"--out-csv and --out-md are the same file ({a.out_csv}); give two names")
    with _writers(a.out_csv, a.out_md):
        table = write_reproduction(a.reference_dir, a.results_dir, a.out_csv, a.out_md)
    counts = table["status"].value_counts()
    print(json.dumps({"cells": int(len(table)),
                      "status": {status: int(n) for status, n in sorted(counts.items())},
                      "outside_ci": [r["config_id"] for r in table.to_dict("records") if r["status"] == "outside CI"],
                      "out": [a.out_csv, a.out_md]}, indent=1))


def cmd_all(a) -> None:
    config = _cfg(a)
    with _writers(a.results_dir, a.figures_dir):
        res = write_results(config, a.runs_dir, a.results_dir, allow_incomplete=a.allow_incomplete)
        runs, missing = read_results(a.results_dir)
        write_history(config, a.runs_dir, os.path.join(a.results_dir, HISTORY_FILE))
        write_versions(a.runs_dir, os.path.join(a.results_dir, "versions.json"))
        write_tables(config, runs, missing, os.path.join(a.results_dir, "tables"))
        write_csv_atomic(os.path.join(a.results_dir, "claims.csv"), check_claims(config, runs, missing),
                         "the claims table")
        history = read_history(a.results_dir)
        make_figures(config, runs, a.figures_dir, history=history)
        write_plateaus(config, history, os.path.join(a.results_dir, CURVES_FILE),
                       os.path.join(a.results_dir, "tables", "learning_curves.md"))
        diag = write_diagnostics(config, a.runs_dir, os.path.join(a.results_dir, DIAGNOSTICS_FILE),
                                 os.path.join(a.results_dir, "tables", "diagnostics.md"))
        fig_flip_share(config, diag, a.figures_dir)
    print(json.dumps({"finished_runs": int(res["runs"]["run_id"].nunique()) if len(res["runs"]) else 0,
                      "missing": int(len(res["missing"])), "results": a.results_dir, "figures": a.figures_dir}))


def register(sub) -> None:
    """Add `xtc study ...` to the xtc command line."""
    s = sub.add_parser("study", help="the XTC study: run grid, aggregation, tables, claims, figures",
                       description="Library behind the Snakemake workflow: expand a study config into its runs, "
                       "aggregate finished runs (missing ones only with --allow-incomplete), write tables, the claims check and "
                       "figures, and compare a fresh study with a committed reference.")
    ss = s.add_subparsers(dest="study_command", required=True, metavar="STUDY_COMMAND")

    p = ss.add_parser("check", help="validate a study config; names the line of a YAML syntax error, which "
                      "`snakemake --configfile` does not")
    _add_config(p)
    p.set_defaults(fn=cmd_check)

    p = ss.add_parser("runs", help="the unique runs of a config with their xtc flags (CSV, or JSON with --json)")
    _add_config(p)
    p.add_argument("--kind", choices=["teacher", "student"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_runs)

    p = ss.add_parser("plan", help="number of runs per axis and a rough cost estimate (JSON)")
    _add_config(p)
    p.set_defaults(fn=cmd_plan)

    p = ss.add_parser("aggregate", help="runs.csv (tidy), summary.csv (over seeds), missing.csv and history.csv "
                      "(each run's evaluations)")
    _add_config(p)
    p.add_argument("--runs-dir", required=True, help="the runs root (config paths.runs)")
    p.add_argument("--out-dir", required=True, help="results folder")
    _add_allow_incomplete(p)
    p.set_defaults(fn=cmd_aggregate)

    # the steps that read a results folder (and the config) and write their own outputs
    for name, fn, outs, results_help, help_text in (
            ("tables", cmd_tables, ("--out-dir",), None, "one Markdown table per axis from runs.csv"),
            ("claims", cmd_claims, ("--out",), None, "the recipe's five findings as statistical tests (CSV, one row "
             "per test; verdicts: holds / does not hold / inconclusive)"),
            ("figures", cmd_figures, ("--out-dir",), None, "PNG and PDF figures from runs.csv (learning curves from "
             "history.csv where the results have one)"),
            ("curves", cmd_curves, ("--out-csv", "--out-md"), "the results folder (its history.csv)",
             "has the long budget reached the plateau? per task and quantized bit-width of the budget axis: the late "
             "gain of the learning curve with its 95%% CI and a verdict (flat / rising / inconclusive; CSV and "
             "Markdown)")):
        p = ss.add_parser(name, help=help_text)
        _add_config(p)
        p.add_argument("--results-dir", required=True, help=results_help)
        for flag in outs:
            p.add_argument(flag, required=True)
        p.set_defaults(fn=fn)

    p = ss.add_parser("diagnostics", help="why a student stalls: each run's changed weight codes per role, train-"
                      "vs-dev gap, top-class share and KD gradient shares at each evaluation (diagnostics.csv), a "
                      "Markdown table and the flip-share figure")
    _add_config(p)
    p.add_argument("--runs-dir", required=True, help="the runs root (config paths.runs)")
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-md", required=True)
    p.add_argument("--figures-dir", required=True, help="where flip_share.png and .pdf go")
    p.set_defaults(fn=cmd_diagnostics)

    p = ss.add_parser("reproduce", help="a fresh study's summary.csv against a committed reference, cell by cell "
                      "(CSV and Markdown; JSON counts per status on stdout)",
                      description="Compare RESULTS_DIR/summary.csv with REFERENCE_DIR/summary.csv: per configuration "
                      "the difference of the task-score means (x100), whether the fresh mean lies within the "
                      "reference's 95% t-interval (and the 95% prediction interval of a fresh mean), and a status "
                      "(identical, within CI, outside CI, ...). Nothing is written when either folder lacks a study "
                      "summary.csv.")
    p.add_argument("--reference-dir", required=True, help="the committed results folder (its summary.csv)")
    p.add_argument("--results-dir", required=True, help="the fresh results folder (its summary.csv)")
    p.add_argument("--out-csv", required=True, help="the table, one row per configuration and metric")
    p.add_argument("--out-md", required=True, help="the same as Markdown, cells outside their CI first")
    p.set_defaults(fn=cmd_reproduce)

    p = ss.add_parser("all", help="aggregate + tables + claims + figures in one go (a partial tree with "
                      "--allow-incomplete)")
    _add_config(p)
    p.add_argument("--runs-dir", required=True)
    p.add_argument("--results-dir", required=True)
    p.add_argument("--figures-dir", required=True)
    _add_allow_incomplete(p)
    p.set_defaults(fn=cmd_all)
