"""The Snakemake workflow itself, through real `snakemake` dry runs on a synthetic study tree (nothing is
trained): a profile must be complete, a lost run is planned again unless the study may be incomplete, and the
plan does not depend on how the GLUE folder is spelled or found. (Cross-cutting: it tests no single xtc module.)"""
import csv
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from xtc import study

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SNAKEMAKE = os.path.join(os.path.dirname(sys.executable), "snakemake")
# the order in which the rules' outputs come to exist in a finished study (for the synthetic tree's mtimes)
STAGES = ("teacher", "augment", "student", "export", "study_config", "aggregate", "tables", "claims", "curves",
          "figures", "diagnostics")
# (rule reproduction is left out: tests create its committed input themselves)

pytestmark = pytest.mark.skipif(not os.path.exists(SNAKEMAKE), reason="snakemake not installed beside python")


def tiny_profile(tmp_path, **changes) -> str:
    """A complete study config (3-layer teacher, one task, one seed, three axes) under tmp_path/work."""
    cfg = {
        "profile": "tiny",
        "teacher": {"model": "default", "num_layers": 3, "epochs": 1.0, "lr": 5.0e-5},
        "tasks": ["rte"],
        "seeds": [1],
        "data": {"max_train_samples": 32, "max_eval_samples": 32, "max_seq_length": 32},
        "train": {"device": "cpu"},
        "budgets": {"long": 1.0, "reduce": 1.0},
        "anchor": {"depth": "full", "wbits": 1, "abits": 8, "kd": "one-stage", "epochs": "long", "lr": 5.0e-5,
                   "da": "off"},
        "step1": {"epochs": "reduce", "lr": 5.0e-5, "kd": "one-stage"},
        "axes": [{"name": "bits", "vary": {"wbits": [2, 1]}},
                 {"name": "da", "vary": {"da": ["off", "on"]}},
                 {"name": "xtc", "vary": {"depth": ["full", 2], "wbits": [32, 1]}}],
        "paths": {"runs": "out/runs", "results": "out/results", "figures": "out/figures"},
        "augment": {"copies": 1},
    }
    cfg.update(changes)
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    path = work / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return str(path)


def snakemake(work, *args, env=None, check=True) -> str:
    """Run snakemake on the repository's Snakefile with `work` as working directory; stdout+stderr."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = ROOT
    proc = subprocess.run([SNAKEMAKE, "-s", os.path.join(ROOT, "Snakefile"), "-d", str(work), "--cores", "1",
                           *args], capture_output=True, text=True, env=env, timeout=600)
    out = proc.stdout + proc.stderr
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{out}")
    return out if check else (proc.returncode, out)


def planned_jobs(out: str) -> list[tuple[str, str]]:
    """(rule, first output) of every job a dry run lists."""
    jobs, rule = [], None
    for line in out.splitlines():
        s = line.strip()
        if s.startswith("rule ") and s.endswith(":") or s.startswith("localrule ") and s.endswith(":"):
            rule = s.split()[1].rstrip(":")
        elif rule and s.startswith("output:"):
            jobs.append((rule, s.split(":", 1)[1].strip().split(", ")[0]))
            rule = None
    return jobs


def fake_finished_study(work, configfile: str) -> list[str]:
    """Create every output of the study (empty files), older stages first, as a finished study leaves them.
    Returns the output files."""
    rows = [ln.split("\t") for ln in snakemake(work, "--summary", "--configfile", configfile).splitlines()]
    rows = [r for r in rows if len(r) >= 3 and r[2] in STAGES]
    rows.sort(key=lambda r: STAGES.index(r[2]))
    t = 1_700_000_000
    for i, (path, _, rule, *_) in enumerate(rows):
        full = os.path.join(str(work), path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        open(full, "w").close()
        os.utime(full, (t + 10 * STAGES.index(rule), t + 10 * STAGES.index(rule)))
    return [r[0] for r in rows]


def test_a_lost_run_is_trained_again_unless_the_study_may_be_incomplete(tmp_path):
    configfile = tiny_profile(tmp_path)
    work = tmp_path / "work"
    outputs = fake_finished_study(work, configfile)
    assert "Nothing to be done" in snakemake(work, "-n", "--configfile", configfile)
    # a student's job was cancelled after an earlier aggregation: its metrics.json is gone
    cfg = study.load_config(configfile)
    lost = next(r for r in study.study_runs(cfg).to_dict("records") if r["kind"] == "student" and r["wbits"] == 2)
    lost_file = study.metrics_file(cfg["paths"]["runs"], lost["run_id"])
    assert lost_file in outputs
    os.remove(work / lost_file)
    jobs = planned_jobs(snakemake(work, "-n", "--configfile", configfile))
    assert ("student", lost_file) in jobs  # trained again ...
    rerun = {"export", "aggregate", "tables", "claims", "curves", "figures", "diagnostics"}
    assert rerun <= {rule for rule, _ in jobs}  # ... re-read
    assert [f for rule, f in jobs if rule in ("student", "teacher")] == [lost_file]  # nothing else retrained
    # an explicit option accepts the incomplete study: nothing is trained
    jobs = planned_jobs(snakemake(work, "-n", "--configfile", configfile, "--config", "allow_incomplete=true"))
    assert not [f for rule, f in jobs if rule in ("student", "teacher", "export")]


def test_a_profile_missing_a_required_key_is_an_error(tmp_path):
    configfile = tiny_profile(tmp_path)
    cfg = yaml.safe_load(open(configfile))
    del cfg["seeds"]  # the quick profile has seeds: they must not be taken from there
    with open(configfile, "w") as f:
        yaml.safe_dump(cfg, f)
    rc, out = snakemake(tmp_path / "work", "-n", "--configfile", configfile, check=False)
    assert rc != 0 and "invalid study config: config error at <top level>: 'seeds' is a required property" in out


def test_the_plan_does_not_depend_on_how_the_glue_folder_is_found(tmp_path):
    """glue_dir null: $XTC_GLUE_DIR, else ../shared/glue. The same folder, found either way or through a
    symlink, gives the same commands (the params Snakemake compares to decide on re-runs)."""
    configfile = tiny_profile(tmp_path)
    work = tmp_path / "work"
    glue = tmp_path / "shared" / "glue"
    glue.mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "shared")
    env = {k: v for k, v in os.environ.items() if k != "XTC_GLUE_DIR"}
    # the relative default resolves against the working directory, as the jobs' own cwd
    plans = {}
    for name, extra in {"unset": {}, "exported": {"XTC_GLUE_DIR": str(glue)},
                        "trailing slash": {"XTC_GLUE_DIR": str(glue) + "/"},
                        "symlink": {"XTC_GLUE_DIR": str(tmp_path / "link" / "glue")}}.items():
        out = snakemake(work, "-n", "-p", "--forceall", "--configfile", configfile,
                        env={**env, **extra})
        plans[name] = sorted(ln for ln in out.splitlines() if "xtc " in ln)  # jobs are listed in any order
    assert plans["unset"] and any(f"--glue-dir {os.path.realpath(glue)}" in ln for ln in plans["unset"])
    for name in ("exported", "trailing slash", "symlink"):
        assert plans[name] == plans["unset"], name
    shutil.rmtree(work / ".snakemake", ignore_errors=True)


SUMMARY = ("config_id,kind,task,metric,mean,std,n\n"
           "teacher/task~rte,teacher,rte,score,0.70,,1\n"
           "student/a,student,rte,score,0.60,0.02,3\n")


def test_the_reproduction_rule_runs_only_with_a_reference(tmp_path):
    """paths.reference null: no rule `reproduction`. Set: rule `all` asks for it, and it really runs
    `xtc study reproduce` on the fresh and the committed summary.csv. The reference cannot be the results."""
    work = tmp_path / "work"
    plain = tiny_profile(tmp_path)
    assert "reproduction" not in {rule for rule, _ in planned_jobs(snakemake(work, "-n", "--configfile", plain))}
    ref = work / "committed"
    ref.mkdir(parents=True)
    (ref / "summary.csv").write_text(SUMMARY.replace("0.60,0.02", "0.58,0.02"))
    configfile = tiny_profile(tmp_path, paths={"runs": "out/runs", "results": "out/results",
                                               "figures": "out/figures", "reference": "committed"})
    fake_finished_study(work, configfile)
    fresh = work / "out" / "results" / "summary.csv"
    mtime = os.path.getmtime(fresh)
    fresh.write_text(SUMMARY)
    os.utime(fresh, (mtime, mtime))  # as the aggregation left it: nothing upstream is re-run
    jobs = planned_jobs(snakemake(work, "-n", "--configfile", configfile))
    assert {rule for rule, _ in jobs} == {"reproduction"}  # rule `all` asks for it; nothing else re-runs
    snakemake(work, "--configfile", configfile)
    rows = list(csv.DictReader(open(work / "out" / "results" / "reproduction.csv")))
    assert [(r["config_id"], r["status"]) for r in rows] == [("teacher/task~rte", "identical"),
                                                           ("student/a", "within CI")]
    assert "Cells: 1 within CI, 1 identical (of 2)." in (work / "out" / "results" / "reproduction.md").read_text()
    assert os.path.exists(work / "out" / "runs" / "logs" / "reproduction.log")
    assert os.path.exists(work / "out" / "runs" / "benchmarks" / "reproduction.tsv")
    # the committed reference is the study's own results folder: an error, before anything runs
    itself = tiny_profile(tmp_path, paths={"runs": "out/runs", "results": "out/results", "figures": "out/figures",
                                           "reference": "out/results/"})
    rc, out = snakemake(work, "-n", "--configfile", itself, check=False)
    assert rc != 0 and "paths.reference is paths.results" in out
