"""`xtc` command-line flags the Snakemake rules build from the config, beyond the wildcards."""
from __future__ import annotations

from xtc.study.config import resolve_glue_dir
from xtc.study.grid import step1_row
from xtc.study.paths import augment_file


def compress_flags(config: dict, row) -> str:
    """The `xtc compress` flags of a student beyond the wildcards: how it starts (layer reduction of the
    teacher, or the step-1 run) and its augmented training file."""
    runs_dir = config["paths"]["runs"]
    flags = []
    if row["init"] == "step1":
        s1 = step1_row(config, row["task"], int(row["depth"]), int(row["seed"]))
        flags.append(f"--init {runs_dir}/{s1['run_id']}")
    else:
        flags.append(f"--layers {int(row['depth'])}")
    if row["da"] == "on":
        flags.append(f"--train-file {augment_file(runs_dir, row['task'])}")
    return " ".join(flags)


def data_flags(config: dict, what: str = "train") -> str:
    """Shared `xtc` flags: GLUE folder, data caps, sequence length and the fixed training settings (of the
    teacher with `what="teacher"`, else of the students, which add the teacher-output cache budget)."""
    d, t = config["data"], config["train"]
    glue = resolve_glue_dir(config)
    flags = [f"--glue-dir {glue}"] if glue else []
    mts = config["teacher"].get("max_train_samples") if what == "teacher" else d.get("max_train_samples")
    if mts:
        flags.append(f"--max-train-samples {int(mts)}")
    if d.get("max_eval_samples"):
        flags.append(f"--max-eval-samples {int(d['max_eval_samples'])}")
    flags += [f"--max-seq-length {int(d['max_seq_length'])}", f"--batch-size {int(t['batch_size'])}",
              f"--eval-batch-size {int(t['eval_batch_size'])}", f"--eval-every {int(t['eval_every'])}",
              f"--warmup-epochs {t['warmup_epochs']:g}", f"--precision {t['precision']}"]
    if what != "teacher":
        flags.append(f"--teacher-cache-gb {t['teacher_cache_gb']:g}")
    if t.get("device"):
        flags.append(f"--device {t['device']}")
    return " ".join(flags)


def augment_flags(config: dict) -> str:
    """`xtc augment` data flags: the GLUE folder and the examples to augment (augment.max_train_samples, else
    the students' data.max_train_samples, so DA=on runs see the same originals as DA=off runs plus copies)."""
    glue = resolve_glue_dir(config)
    flags = [f"--glue-dir {glue}"] if glue else []
    n = config["augment"].get("max_train_samples") or config["data"].get("max_train_samples")
    if n:
        flags.append(f"--max-train-samples {int(n)}")
    return " ".join(flags)
