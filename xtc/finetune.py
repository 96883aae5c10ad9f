"""Stage 0 of the pipeline: fine-tune a teacher on a GLUE task (labels only)."""
from __future__ import annotations

import os
from dataclasses import asdict, replace

from xtc.data import load_task_data, model_inputs
from xtc.distill import label_loss
from xtc.models import load_classifier, load_tokenizer, pick_device, resolve_model_path
from xtc.precision import resolve_precision
from xtc.tasks import get_task
from xtc.train import Stage, TrainConfig, finish_run, prepare_run_folder, set_seed, train, versions


def label_objective(model, batch):
    """Supervised loss on the labels: cross entropy, or MSE for a regression head (STS-B)."""
    out = model(**model_inputs(batch))
    loss = label_loss(out.logits, batch["labels"], regression=model.config.num_labels == 1)
    return loss, {"label": float(loss.detach())}


def finetune(task_name: str, model_name: str, out_dir: str, cfg: TrainConfig, glue_dir: str | None = None,
             max_train_samples: int | None = None, max_eval_samples: int | None = None,
             overwrite: bool = False, device: str | None = None, quiet: bool = False) -> dict:
    task = get_task(task_name)
    path = resolve_model_path(model_name)
    dev = pick_device(device)
    precision = resolve_precision(cfg.precision, dev)
    cfg = replace(cfg, precision=precision.precision)  # the run records (and resumes with) what it used
    run_config = {"command": "finetune", "task": task.name, "model": model_name, "model_path": path,
                  **asdict(cfg), "max_train_samples": max_train_samples, "max_eval_samples": max_eval_samples}
    resume = prepare_run_folder(out_dir, run_config, overwrite)
    set_seed(cfg.seed)
    tokenizer = load_tokenizer(path)
    model = load_classifier(path, task.num_labels)
    train_data, eval_sets = load_task_data(task, tokenizer, glue_dir, cfg.max_seq_length,
                                           max_train_samples, max_eval_samples)
    result = train(model, [Stage("finetune", cfg.epochs, 1.0, label_objective)], train_data, eval_sets, task, cfg,
                   out_dir, run_config, dev, resume, quiet)
    record = {"task": task.name, "selection_metric": task.selection_metric, **result,
              "precision": precision.to_dict(),
              "config": {**run_config, "device": str(dev), "glue_dir": glue_dir or os.environ.get("XTC_GLUE_DIR"),
                         "train_size": len(train_data), "eval_sizes": {k: len(v) for k, v in eval_sets.items()}},
              "versions": versions()}
    return finish_run(out_dir, model, tokenizer, record)
