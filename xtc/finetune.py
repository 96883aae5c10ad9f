"""Stage 0 of the pipeline: fine-tune a teacher on a GLUE task (labels only)."""
from __future__ import annotations

from dataclasses import asdict, replace

from xtc.config import RunOptions, TrainConfig
from xtc.data import load_task_data
from xtc.diagnostics import RunDiagnostics
from xtc.distill import label_objective
from xtc.files import DEV_PREDICTIONS_FILE
from xtc.models import check_sequence_length, load_classifier, load_tokenizer, pick_device, resolve_model_path
from xtc.tasks import get_task
from xtc.run_folder import (data_settings, finish_run, predictions_record, prepare_run_folder, run_folder_writer,
                             run_record)
from xtc.train import Stage, resolve_training_precision, set_seed, train


def finetune(task_name: str, model_name: str, out_dir: str, cfg: TrainConfig, run: RunOptions | None = None) -> dict:
    """Fine-tune `model_name` on the task's labels into `out_dir`, keeping the checkpoint that scores best on the
    validation split (on dev with --validation-samples 0); returns the run record (also its metrics.json)."""
    with run_folder_writer(out_dir):  # one writer per run folder, from the start
        run = run or RunOptions()
        task = get_task(task_name)
        path = resolve_model_path(model_name)
        dev = pick_device(run.device)
        run_config = {"command": "finetune", "task": task.name, **task.record(), "model": model_name,
                      "model_path": path, **asdict(cfg), **data_settings(run)}
        set_seed(cfg.seed)
        tokenizer = load_tokenizer(path)
        model = load_classifier(path, task.num_labels)
        check_sequence_length(model, cfg.max_seq_length)
        data = load_task_data(task, tokenizer, run.glue_dir, cfg.max_seq_length, run.max_train_samples,
                              run.max_eval_samples, validation_samples=run.validation_samples, subset=run.subset,
                              data_seed=run.data_seed)
        train_data, eval_sets = data.train, data.evals
        resume = prepare_run_folder(out_dir, run_config, run.overwrite)  # after every check: a bad input writes nothing
        precision = resolve_training_precision(cfg, dev, model.to(dev), label_objective, train_data, resume,
                                               f"finetune {task.name}: {model.config.num_hidden_layers} layers, "
                                               f"batch {cfg.batch_size}")
        cfg = replace(cfg, precision=precision.precision)  # the run records (and resumes with) what it used
        run_config["precision"] = precision.precision
        result = train(model, [Stage("finetune", cfg.epochs, 1.0, label_objective)], train_data, eval_sets, task, cfg,
                       out_dir, run_config, dev, resume, run.quiet,
                       RunDiagnostics(model, train_data, cfg.train_eval_examples), data.validation)
        record = run_record(task, result, run_config, run, dev, train_data, eval_sets,
                            {"precision": precision.to_dict(), "data": data.record})
        return finish_run(out_dir, model, tokenizer, record,
                          {DEV_PREDICTIONS_FILE: predictions_record(task, result, eval_sets)})
