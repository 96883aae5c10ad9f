"""Tests of xtc/study/flags.py: the xtc flags the study passes to each job."""
import os


def test_study_passes_its_precision_to_every_training_job():
    import xtc.study as study

    root = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "workflow", "config")
    cfg = study.load_config(os.path.join(root, "smoke.yaml"))
    del cfg["train"]["precision"]
    assert study.validate_config(cfg)["train"]["precision"] == "auto"  # the schema default
    cfg["train"]["precision"] = "fp32"
    for what in ("teacher", "train"):
        assert "--precision fp32" in study.data_flags(cfg, what)
