"""A run folder's lifecycle around the training loop: one writer per folder, refusing to clobber a finished run,
resuming an unfinished one with the same settings, the checkpoints the loop hands over (`Checkpoints`), the run
record (metrics.json) and the final save. The loop itself never looks at the folder."""
from __future__ import annotations

import os
import shutil
import sys

from xtc.checkpoint import has_state, load_state, save_state
from xtc.config import RunOptions
from xtc.data import Encoded
from xtc.files import (METRICS_FILE, STATE_DIR, WriteError, check_out_folder, exclusive_writer, remove_stale_temps,
                       write_errno, write_error, write_json_atomic)
from xtc.tasks import Task


class RunFolderError(ValueError):
    pass


_RESUME_KEYS = ("stage", "stage_step", "global_step", "best_metric", "best_step", "best_model", "history",
                "wall_seconds", "train_seconds", "train_tokens", "train_examples", "last_terms", "model", "rng",
                "optimizer", "scheduler")


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": sys.version.split()[0]}
    for pkg in ("xtc-bench", "torch", "transformers", "datasets", "scikit-learn", "scipy", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def run_folder_writer(out_dir: str):
    """The one writer of the run folder `out_dir` (a context manager; checked first, see check_out_folder): a
    second command on the same folder stops at once with a one-line error naming the PID that holds it."""
    check_out_folder(out_dir)
    return exclusive_writer(out_dir, "run folder")


def prepare_run_folder(out_dir: str, run_config: dict, overwrite: bool) -> dict | None:
    """Refuse to clobber a finished run; return the saved state of an unfinished one with the same settings.
    Creates nothing: the folder appears with the first checkpoint, so a run that fails validation leaves none."""
    check_out_folder(out_dir)
    finished = os.path.join(out_dir, METRICS_FILE)
    state_dir = os.path.join(out_dir, STATE_DIR)
    for folder in (out_dir, state_dir):  # temporaries of writers that were killed
        remove_stale_temps(folder)
    if os.path.exists(finished):
        if not overwrite:
            raise RunFolderError(f"{out_dir} already holds a finished run ({METRICS_FILE}); choose another --out "
                                 f"or pass --overwrite to replace it")
        return None  # replaced at the new run's first checkpoint: a run that fails before keeps the old one
    elif os.path.isdir(state_dir):  # an unfinished run of xtc: resume it, or start over when asked to
        if overwrite or not has_state(state_dir):  # nothing to resume (killed before its first checkpoint)
            shutil.rmtree(out_dir)
            return None
        state = load_state(state_dir)
        saved = state.get("run_config")
        if not isinstance(saved, dict) or not all(k in state for k in _RESUME_KEYS):
            raise RunFolderError(f"cannot resume from {state_dir}: its state lacks run settings or counters; "
                                 f"pass --overwrite to start the run over")
        if run_config.get("precision") == "auto" and saved.get("precision") in ("fp32", "bf16"):
            run_config = dict(run_config, precision=saved["precision"])  # auto resumes with what it chose
        if saved != run_config:
            diff = {k: (saved.get(k), v) for k, v in run_config.items() if saved.get(k) != v}
            raise RunFolderError(f"{out_dir} holds an unfinished run with other settings {diff} (saved, now); "
                                 f"re-run with the same settings to resume, or pass --overwrite to start over")
        return state
    elif os.path.isdir(out_dir) and os.listdir(out_dir):
        raise RunFolderError(f"{out_dir} exists, is not empty and holds no xtc run; choose a new --out folder")
    return None


def run_record(task: Task, result: dict, run_config: dict, run: RunOptions, device, train_data: Encoded,
               eval_sets: dict[str, Encoded], extra: dict | None = None) -> dict:
    """What a finished run's metrics.json holds: the task, the training result, `extra` (what the command adds,
    e.g. quantization and sizes), the full configuration with data sizes, and package versions."""
    result = {k: v for k, v in result.items() if k != "predictions"}  # those go to dev_predictions.json
    return {"task": task.name, "selection_metric": task.selection_metric, **result, **(extra or {}),
            "config": {**run_config, "device": str(device), "glue_dir": run.glue_dir or os.environ.get("XTC_GLUE_DIR"),
                       "train_size": len(train_data), "eval_sizes": {k: len(v) for k, v in eval_sets.items()}},
            "versions": versions()}


def data_settings(run: RunOptions) -> dict:
    """The data settings a run's resume state and record keep: which rows it trains and selects on."""
    return {"max_train_samples": run.max_train_samples, "max_eval_samples": run.max_eval_samples,
            "subset": run.subset, "data_seed": run.data_seed, "validation_samples": run.validation_samples}


def predictions_record(task: Task, result: dict, eval_sets: dict[str, Encoded]) -> dict:
    """dev_predictions.json: the selected and the final checkpoint's prediction for every dev example, in the
    dev set's order, beside the labels (class ids, or scores for regression); MNLI's second split under
    `other_splits`."""
    labels = lambda split: [float(y) if task.is_regression else int(y) for y in eval_sets[split].labels]  # noqa: E731
    first, *others = eval_sets
    preds = result["predictions"]
    out = {"task": task.name, "split": first, "labels": labels(first), "selected": preds["selected"][first],
           "final": preds["final"][first]}
    if others:
        out["other_splits"] = {s: {"labels": labels(s), "selected": preds["selected"][s], "final": preds["final"][s]}
                               for s in others}
    return out


def remove_finished_run(out_dir: str) -> None:
    """Delete a finished run's files (metrics.json first: the folder stops being finished) but keep the resume
    state of the run that replaces it."""
    names = sorted(os.listdir(out_dir), key=lambda n: n != METRICS_FILE)
    for name in names:
        path = os.path.join(out_dir, name)
        if name == STATE_DIR:
            continue
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)


def finish_run(out_dir: str, model, tokenizer, record: dict, json_files: dict[str, dict] | None = None) -> dict:
    """Save the kept model and tokenizer (and `json_files`, {name: content}), then metrics.json (last,
    atomically), then drop the resume state. A failed save (full disk, no permission) removes what it wrote and
    keeps the resume state: the same command run again only saves."""
    from xtc.models import quiet_hf_loading

    try:
        with quiet_hf_loading():  # no "Writing model shards" bar in the logs
            model.save_pretrained(out_dir)
            tokenizer.save_pretrained(out_dir)
        for name, content in (json_files or {}).items():
            write_json_atomic(os.path.join(out_dir, name), content, name)
        write_json_atomic(os.path.join(out_dir, METRICS_FILE), record, "the run record")
    except Exception as exc:
        err = write_errno(exc)
        if err is None:
            raise
        remove_finished_run(out_dir)  # the partial final save; the checkpoint it came from stays
        if isinstance(exc, WriteError):
            raise
        size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
        raise write_error(OSError(err, os.strerror(err)), out_dir, "the final model", size) from None
    shutil.rmtree(os.path.join(out_dir, STATE_DIR), ignore_errors=True)
    return record


def discard_unfinished_run(out_dir: str) -> None:
    """Drop the resume state of a run that cannot succeed, and the run folder if nothing else is in it."""
    shutil.rmtree(os.path.join(out_dir, STATE_DIR), ignore_errors=True)
    try:
        os.rmdir(out_dir)  # only when empty
    except OSError:
        pass


class Checkpoints:
    """The run folder as the training loop sees it: `save` a resume state at each evaluation, `discard` the run
    when it cannot succeed. A full disk at the first save leaves no state folder (and no empty run folder), at a
    later one the previous checkpoint. A finished run that this one replaces (--overwrite) is removed only once
    the new run has its first checkpoint."""

    def __init__(self, out_dir: str, resumed: bool):
        self.out_dir, self.saved = out_dir, resumed

    def save(self, state: dict, step: int) -> None:
        replacing = os.path.isfile(os.path.join(self.out_dir, METRICS_FILE))
        try:
            save_state(os.path.join(self.out_dir, STATE_DIR), state, step)  # atomic: see xtc/checkpoint.py
        except OSError:
            if not self.saved:
                self.discard()
            raise
        self.saved = True
        if replacing:
            remove_finished_run(self.out_dir)

    def discard(self) -> None:
        discard_unfinished_run(self.out_dir)
