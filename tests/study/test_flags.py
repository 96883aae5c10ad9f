"""Tests of xtc/study/flags.py: the xtc flags the study passes to each job."""
import os

from study_fixtures import tiny_config
from xtc import study


def test_study_passes_its_precision_to_every_training_job():
    import xtc.study as study

    root = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "workflow", "config")
    cfg = study.load_config(os.path.join(root, "smoke.yaml"))
    del cfg["train"]["precision"]
    assert study.validate_config(cfg)["train"]["precision"] == "auto"  # the schema default
    cfg["train"]["precision"] = "fp32"
    for what in ("teacher", "train"):
        assert "--precision fp32" in study.data_flags(cfg, what)


def test_students_get_the_cache_budget_and_teachers_do_not():
    cfg = tiny_config()
    assert "--teacher-cache-gb 6 " in study.data_flags(cfg) + " "  # the schema default
    assert "--teacher-cache-gb" not in study.data_flags(cfg, "teacher")  # `xtc finetune` has no teacher
    runs = study.study_runs(cfg)
    assert all(("--teacher-cache-gb" in a) == (k == "student") for k, a in zip(runs["kind"], runs["args"]))
    cfg["train"]["teacher_cache_gb"] = 0
    assert "--teacher-cache-gb 0" in study.data_flags(cfg)


def test_teachers_take_their_own_warm_up_and_students_the_train_one():
    cfg = tiny_config()
    cfg["train"]["warmup_epochs"] = 0.125
    assert "--warmup-epochs 0.125 " in study.data_flags(cfg, "teacher") + " "  # null: the students' value
    cfg["teacher"]["warmup_epochs"] = 0.5
    assert "--warmup-epochs 0.5 " in study.data_flags(cfg, "teacher") + " "
    assert "--warmup-epochs 0.125 " in study.data_flags(cfg) + " "


def test_every_run_is_a_valid_xtc_command_with_its_settings():
    """The flags the runs table carries parse with xtc's own command line into the run's settings."""
    import shlex

    from xtc.cli import build_parser
    from xtc.settings import build_settings

    from xtc.config import CompressConfig

    cfg = tiny_config()
    cfg["axes"][2]["vary"]["kd"].append("two-stage-1x")
    cfg["axes"][3]["vary"]["da"].append("on-steps")
    parser = build_parser()
    for r in study.study_runs(cfg).to_dict("records"):
        a = build_settings(parser.parse_args([r["command"], *shlex.split(r["args"])]))  # as xtc's main does
        t = a.train  # the parsed settings, as config objects (xtc.config)
        assert a.task == r["task"] and a.out == study.run_dir(cfg["paths"]["runs"], r["run_id"])
        assert t.epochs == r["epochs"] and t.lr == r["lr"] and t.seed == r["seed"]
        assert t.precision == cfg["train"]["precision"] and t.batch_size == cfg["train"]["batch_size"]
        if r["kind"] == "student":
            c = a.compress
            kd, factor = study.kd_flags(r["kd"])  # a control arm runs as xtc's two-stage at its own factor
            assert (a.quant.wbits, a.quant.abits, c.kd) == (r["wbits"], r["abits"], kd)
            assert c.stage1_lr_factor == (CompressConfig().stage1_lr_factor if factor is None else factor)
            assert a.teacher == study.teacher_dir(cfg["paths"]["runs"], r["task"])
            assert (c.init is None) == (r["init"] == "teacher") and (c.train_file is None) == (r["da"] == "off")
            assert c.layers == (r["depth"] if r["init"] == "teacher" else None)
            inputs = r["inputs"]
            assert inputs["teacher"] == os.path.join(a.teacher, study.METRICS_FILE)
            if c.init:
                assert inputs["init"] == os.path.join(c.init, study.METRICS_FILE)
            if c.train_file:
                assert inputs["train_file"] == c.train_file
        else:
            assert a.model == "default" and r["inputs"] == {}


def test_paths_with_spaces_and_semicolons_stay_one_argument(tmp_path):
    """A model path, runs folder or GLUE folder with a space or a `;` reaches xtc as one argument and never
    runs a second command (each job's flags go to bash as the rules pass them)."""
    import shlex
    import subprocess

    cfg = tiny_config(tmp_path)
    model = str(tmp_path / "my model; touch INJECTED")
    cfg["teacher"]["model"] = model
    cfg["paths"]["runs"] = str(tmp_path / "runs dir;touch INJECTED")
    cfg["glue_dir"] = str(tmp_path / "glue $(touch INJECTED)")
    runs = study.study_runs(cfg)
    jobs = [(r["command"], r["args"]) for r in runs.to_dict("records")]
    jobs += [("augment", study.augment_flags(cfg, t)) for t in cfg["tasks"]]
    for command, args in jobs:
        out = subprocess.run(["bash", "-c", f"printf '%s\\n' {args}"], cwd=tmp_path, capture_output=True,
                             text=True, check=True).stdout.splitlines()
        assert out == shlex.split(args)
        assert out[out.index("--glue-dir") + 1] == os.path.realpath(cfg["glue_dir"])
        if command == "finetune":
            assert out[out.index("--model") + 1] == model
    assert not (tmp_path / "INJECTED").exists()
