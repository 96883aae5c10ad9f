"""The `xtc` command line of every job of the study, built once from the config (the grid stores each run's
flags in its runs table; the Snakemake rules only look them up). Every value is shell-quoted here, so a
path with a space or a `;` stays one argument and never runs a command."""
from __future__ import annotations

import shlex
from dataclasses import fields

from xtc.config import TrainConfig
from xtc.settings import flag_of
from xtc.study.config import AUGMENTED_DA, da_step_share, kd_flags, resolve_glue_dir, task_arg
from xtc.study.paths import augment_file, fmt_value, run_dir, teacher_dir


def join_flags(pairs) -> str:
    """'--flag value ...' with every value shell-quoted; a value of True is a bare switch, None is left out."""
    out = []
    for flag, value in pairs:
        if value is None or value is False:
            continue
        out.append(flag if value is True else f"{flag} {shlex.quote(str(value))}")
    return " ".join(out)


def _data_pairs(config: dict, what: str, examples=None, warmup_share: float = 1.0) -> list:
    d, t = config["data"], config["train"]
    glue = resolve_glue_dir(config)
    mts = config["teacher"]["max_train_samples"] if what == "teacher" else d["max_train_samples"]
    if examples is not None:  # a student's own training-set size (grid factor `examples`; 'all': the whole set)
        mts = None if examples == "all" else examples
    teacher_warmup = config["teacher"].get("warmup_epochs") if what == "teacher" else None
    warmup = (t["warmup_epochs"] if teacher_warmup is None else teacher_warmup) * warmup_share
    return [("--glue-dir", glue), ("--max-train-samples", int(mts) if mts else None), *_selection_pairs(d),
            ("--max-eval-samples", int(d["max_eval_samples"]) if d["max_eval_samples"] else None),
            ("--max-seq-length", int(d["max_seq_length"])), ("--batch-size", int(t["batch_size"])),
            ("--eval-batch-size", int(t["eval_batch_size"])), ("--eval-every", int(t["eval_every"])),
            ("--warmup-epochs", f"{warmup:g}"), ("--precision", t["precision"]),
            ("--teacher-cache-gb", f"{t['teacher_cache_gb']:g}" if what != "teacher" else None),
            ("--device", t["device"] or None), *_other_train_pairs(t)]


def _selection_pairs(d: dict) -> list:
    """Which training rows every job of a task uses (teacher, students, augmentation): always spelled out."""
    return [("--subset", d["subset"]), ("--data-seed", int(d["data_seed"])),
            ("--validation-samples", int(d["validation_samples"]))]


_SPELLED_OUT = {"batch_size", "eval_batch_size", "eval_every", "warmup_epochs", "precision"}


def _other_train_pairs(t: dict) -> list:
    """Every other TrainConfig setting of the `train` block, so a new study setting needs no edit here; one at
    the package's default is left out, so adding a setting does not change any existing run's command."""
    return [(flag_of(f), t[f.name]) for f in fields(TrainConfig)
            if f.name in t and f.name not in _SPELLED_OUT and t[f.name] != f.default]


def data_flags(config: dict, what: str = "student") -> str:
    """Flags every training job shares: GLUE folder, data caps, sequence length and the fixed training
    settings (of the teacher with `what="teacher"`, else of the students, which add the teacher-output cache
    budget)."""
    return join_flags(_data_pairs(config, what))


def teacher_flags(config: dict, row: dict) -> str:
    """`xtc finetune` flags of a teacher run (a row of the grid)."""
    t = config["teacher"]
    return join_flags([("--task", task_arg(config, row["task"])), ("--model", t["model"]),
                       ("--out", run_dir(config["paths"]["runs"], row["run_id"])),
                       ("--epochs", float(t["epochs"])), ("--lr", float(t["lr"])), ("--seed", int(t["seed"])),
                       *_data_pairs(config, "teacher")])


def student_flags(config: dict, row: dict) -> str:
    """`xtc compress` flags of a student run (a row of the grid, with its `init_run`): layer reduction of the
    teacher (`--layers k`) or the step-1 run it starts from (`--init`), quantization, KD, budget, and the
    augmented training file when da is on or on-steps (xtc.study.config.DA_LEVELS; a kd control arm becomes
    xtc's two-stage with its --stage1-lr-factor, KD_CONTROLS). Settings are written as in the run's folder name."""
    runs = config["paths"]["runs"]
    v = {c: fmt_value(c, row[c]) for c in ("depth", "wbits", "abits", "kd", "epochs", "lr", "seed")}
    step1 = row["init"] == "step1"
    kd, stage1_lr_factor = kd_flags(row["kd"])  # a control arm: two-stage-1x is two-stage at factor 1
    return join_flags([("--task", task_arg(config, row["task"])), ("--teacher", teacher_dir(runs, row["task"])),
                       ("--out", run_dir(runs, row["run_id"])),
                       ("--layers", None if step1 else v["depth"]),
                       ("--init", run_dir(runs, row["init_run"]) if step1 else None),
                       ("--train-file", augment_file(runs, row["task"]) if row["da"] in AUGMENTED_DA else None),
                       ("--wbits", v["wbits"]), ("--abits", v["abits"]), ("--kd", kd),
                       ("--stage1-lr-factor", None if stage1_lr_factor is None else f"{stage1_lr_factor:g}"),
                       ("--epochs", v["epochs"]), ("--lr", v["lr"]), ("--seed", v["seed"]),
                       # on-steps: warm-up in epochs of the augmented file, scaled like its epochs (same steps)
                       *_data_pairs(config, "student", row.get("examples"), da_step_share(config, row["da"]))])


def augment_flags(config: dict, task: str) -> str:
    """`xtc augment` flags of a task: candidates from `augment.model` (default: the task's fine-tuned
    teacher), the examples to augment (augment.max_train_samples, else the students' data.max_train_samples,
    drawn with the students' data.subset, data_seed and validation_samples, so DA=on runs see the same originals
    as DA=off runs plus copies)."""
    a, runs = config["augment"], config["paths"]["runs"]
    n = a["max_train_samples"] or config["data"]["max_train_samples"]
    return join_flags([("--task", task_arg(config, task)), ("--teacher", a["model"] or teacher_dir(runs, task)),
                       ("--out", augment_file(runs, task)), ("--copies", a["copies"]),
                       ("--replace-prob", a["replace_prob"]), ("--candidates", a["candidates"]),
                       ("--seed", a["seed"]), ("--pair-mode", a["pair_mode"]),
                       ("--replace-stop-words", a["replace_stop_words"]),
                       ("--glue-dir", resolve_glue_dir(config)), ("--max-train-samples", int(n) if n else None),
                       *_selection_pairs(config["data"]),
                       ("--overwrite", True), ("--quiet", True)])
