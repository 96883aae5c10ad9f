"""A rough cost estimate of a study config (`xtc study plan`), from the config's `cost` section and GLUE
sizes."""
from __future__ import annotations

import math

from xtc.study.config import AUGMENTED_DA
from xtc.study.grid import study_runs
from xtc.study.paths import augment_file

# GLUE training-set sizes (examples), for cost estimates only.
GLUE_TRAIN_SIZE = {"cola": 8551, "sst2": 67349, "mrpc": 3668, "stsb": 5749, "qqp": 363846, "mnli": 392702,
                   "qnli": 104743, "rte": 2490, "wnli": 635}
GLUE_DEV_SIZE = {"cola": 1043, "sst2": 872, "mrpc": 408, "stsb": 1500, "qqp": 40430, "mnli": 19647,
                 "qnli": 5463, "rte": 277, "wnli": 71}
# Mean WordPiece tokens per example (bert-base-uncased vocabulary, [CLS]/[SEP] included), train / dev,
# measured on the local GLUE copy (MNLI/QQP/QNLI: typical values); for cost estimates only.
GLUE_TOKENS = {"cola": (13, 12), "sst2": (13, 25), "mrpc": (54, 53), "stsb": (22, 32), "qqp": (30, 30),
               "mnli": (40, 40), "qnli": (50, 50), "rte": (70, 68), "wnli": (38, 38)}


def examples_available(config: dict, task: str, examples=None) -> int | None:
    """The training examples a student of `task` learns from (originals, before augmentation): the task's
    training rows less the validation rows (data.validation_samples, drawn first), capped by its `examples`
    (None: data.max_train_samples; 'all': no cap). None for a task whose size the study does not know (a task of
    your own): the run record's data.train.n has the truth. Claim 3.small reads it: tasks capped to one size
    cannot show "most on the small tasks"."""
    if task not in GLUE_TRAIN_SIZE:
        return None
    n = GLUE_TRAIN_SIZE[task] - validation_rows(config, task)
    cap = config["data"].get("max_train_samples") if examples is None else (None if examples == "all" else examples)
    return min(n, int(cap)) if cap else n


def validation_rows(config: dict, task: str) -> int:
    """The validation rows held out of a GLUE task's training split (xtc.data.select_training_rows: at most a
    fifth of the split)."""
    return min(int(config["data"].get("validation_samples") or 0), GLUE_TRAIN_SIZE[task] // 5)


def task_sizes(config: dict) -> dict:
    """Per task, the training examples its students learn from at the profile's data.max_train_samples
    (examples_available); what `xtc study plan` prints as train_examples."""
    return {t: examples_available(config, t) for t in config["tasks"]}


REF_BATCH = 32  # the batch size of the cost section's step_s


def estimate_cost(config: dict):
    """Rough seconds per job of this config on the machine the `cost` section describes (see its comments):
    `compute_s` = train steps x step cost (scaled by tokens per example, depth, quantization and the KD
    teacher forward) + evaluations; `startup_s` = process start-up (imports, model and data loading).
    A planning aid; the benchmark files hold the truth."""
    import pandas as pd

    c, d, t = config["cost"], config["data"], config["train"]
    L = config["teacher"]["num_layers"]
    layer_s = c["step_s"] / L  # one layer's share of a train step at ref_tokens
    bs = t["batch_size"]
    batch_share = bs / REF_BATCH  # step_s is a step of REF_BATCH examples; a step costs by its examples
    aug_cap = config["augment"].get("max_train_samples") or d.get("max_train_samples")
    eval_points = t.get("eval_points")

    def tokens(task, split):
        n = GLUE_TOKENS[task][0 if split == "train" else 1]
        return min(n, d["max_seq_length"]) / c["ref_tokens"]

    def n_validation(task):  # held out of the training split first; scored at every evaluation
        return validation_rows(config, task)

    def n_train(task, cap):
        n = GLUE_TRAIN_SIZE[task] - n_validation(task)
        return min(n, cap) if cap else n

    def n_eval(task):  # dev; each evaluation also scores the validation rows (evals_cost)
        n = GLUE_DEV_SIZE[task]
        return min(n, d["max_eval_samples"]) if d.get("max_eval_samples") else n

    def evals_cost(task, depth, quant, epochs, steps):
        # eval_points: exactly that many evaluations; else every eval_every steps and at each epoch end
        n = eval_points or (math.ceil(epochs) + (steps // t["eval_every"] if t["eval_every"] else 0))
        unit = depth * layer_s * c["forward_share"] * (c["quant_factor"] if quant else 1) / REF_BATCH
        dev = n_eval(task) * tokens(task, "dev") * unit
        validation = n_validation(task) * tokens(task, "train") * unit
        return n * (dev + validation) + 2 * dev  # + the final and selected checkpoints' dev predictions

    rows = []
    for r in study_runs(config).to_dict("records"):
        task = r["task"]
        if r["kind"] == "teacher":
            n = n_train(task, config["teacher"].get("max_train_samples"))
            steps = math.ceil(math.ceil(n / bs) * r["epochs"])
            s = steps * batch_share * L * layer_s * tokens(task, "train") + evals_cost(task, L, False, r["epochs"],
                                                                                     steps)
            rows.append({"job": "teacher", "run_id": r["run_id"], "steps": steps, "compute_s": s,
                         "startup_s": c["startup_s"]})
            continue
        examples = r.get("examples")
        cap = d.get("max_train_samples") if examples is None else (None if examples == "all" else examples)
        # on-steps: the augmented file, its epochs already divided by (1 + copies) in the grid (the steps of off)
        augmented = r["da"] in AUGMENTED_DA
        n = n_train(task, aug_cap) * (1 + config["augment"]["copies"]) if augmented else n_train(task, cap)
        steps = math.ceil(math.ceil(n / bs) * r["epochs"])
        quant = r["wbits"] < 32
        student = r["depth"] * layer_s * (c["quant_factor"] if quant else 1)
        teacher_fwd = L * layer_s * c["forward_share"] if r["kd"] != "none" else 0.0
        s = steps * batch_share * (student + teacher_fwd) * tokens(task, "train")
        s += evals_cost(task, r["depth"], quant, r["epochs"], steps)
        rows.append({"job": "student", "run_id": r["run_id"], "steps": steps, "compute_s": s,
                     "startup_s": c["startup_s"]})
        if quant:
            rows.append({"job": "export", "run_id": r["run_id"], "steps": 0, "compute_s": 1.0,
                         "startup_s": c["startup_s"]})
    plan = study_runs(config)
    for task in sorted(set(plan.loc[plan["da"].isin(AUGMENTED_DA), "task"])):
        rows.append({"job": "augment", "run_id": augment_file("", task), "steps": 0,
                     "compute_s": n_train(task, aug_cap) * config["augment"]["copies"] * c["augment_s_per_copy"],
                     "startup_s": c["startup_s"]})
    rows.append({"job": "aggregate", "run_id": "", "steps": 0, "compute_s": 10.0, "startup_s": 4.0})
    out = pd.DataFrame(rows)
    # wall: `jobs` single-thread jobs side by side give `parallel_speedup` x the throughput of one job using
    # every core; start-ups (single-threaded imports) overlap fully
    out["wall_s"] = out["compute_s"] / c["parallel_speedup"] + out["startup_s"] / c["jobs"]
    return out
