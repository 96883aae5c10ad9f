"""The XTC steps as one command: an optional layer-reduced copy of the teacher, optional extreme
quantization (fake-quant QAT with latent fp32 weights), trained with knowledge distillation from the
fine-tuned teacher (none / one-stage / two-stage)."""
from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, replace

from xtc.arch import architecture_of
from xtc.config import CompressConfig, KDConfig, QuantSpec, RunOptions, TrainConfig
from xtc.data import encode, load_task_data, read_train_file
from xtc.diagnostics import RunDiagnostics
from xtc.distill import (evenly_spaced_layers, label_objective, layer_maps, make_kd_loss, parse_layer_list,
                         reduce_layers)
from xtc.files import DEV_PREDICTIONS_FILE, METRICS_FILE
from xtc.models import check_sequence_length, load_classifier, load_tokenizer, pick_device
from xtc.quant import apply_quantization, model_size
from xtc.tasks import Task, get_task
from xtc.teacher_cache import TeacherCache, plan_cache
from xtc.run_folder import (data_settings, finish_run, predictions_record, prepare_run_folder, run_folder_writer,
                             run_record)
from xtc.train import Stage, resolve_training_precision, set_seed, train


def load_teacher(teacher_dir: str, task: Task):
    """The fine-tuned full-precision teacher of `task`, frozen."""
    if not os.path.isfile(os.path.join(teacher_dir, METRICS_FILE)) and not os.path.isfile(
            os.path.join(teacher_dir, "config.json")):
        raise FileNotFoundError(f"--teacher {teacher_dir} is not a fine-tuned model folder; make one with "
                                f"`xtc finetune --task {task.name} --out DIR`")
    teacher = load_classifier(teacher_dir)
    if teacher.config.num_labels != task.num_labels:
        raise ValueError(f"teacher {teacher_dir} has {teacher.config.num_labels} outputs, task {task.name} "
                         f"needs {task.num_labels}: fine-tune a teacher on {task.name} first")
    if getattr(teacher.config, "xtc_quant", None):
        raise ValueError(f"teacher {teacher_dir} is a quantized student; distil from a full-precision teacher")
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def build_student(teacher, compress_cfg: CompressConfig, spec: QuantSpec, num_labels: int):
    """The model to train: a copy of `compress_cfg.init` (e.g. a step-1 layer-reduced student) or of the teacher,
    layer-reduced when asked, then quantized by `spec`. Returns (student, its teacher-layer list or None when
    not reduced, {role: quantized module names})."""
    n_teacher = teacher.config.num_hidden_layers
    wanted = None
    if compress_cfg.teacher_layers is not None:
        wanted = parse_layer_list(compress_cfg.teacher_layers, n_teacher)
    elif compress_cfg.layers is not None:
        wanted = evenly_spaced_layers(n_teacher, compress_cfg.layers)
    if compress_cfg.init is None:
        if wanted is None or wanted == list(range(n_teacher)):
            student, have = reduce_layers(teacher, list(range(n_teacher))), None
        else:
            student, have = reduce_layers(teacher, wanted), wanted
    else:
        student = load_classifier(compress_cfg.init, num_labels)
        if getattr(student.config, "xtc_quant", None):
            raise ValueError(f"--init {compress_cfg.init} is already quantized; start quantization from a "
                             f"full-precision model")
        have = getattr(student.config, "xtc_teacher_layers", None)
        if wanted is not None and wanted != have:
            raise ValueError(f"--init {compress_cfg.init} was reduced to teacher layers {have}, but {wanted} were "
                             f"asked for; drop --layers/--teacher-layers to keep the init's layers")
        if have is None and student.config.num_hidden_layers != n_teacher:
            raise ValueError(f"--init {compress_cfg.init} has {student.config.num_hidden_layers} layers but records "
                             f"no teacher layer list; it must be an xtc student of this teacher")
    for p in student.parameters():  # a copy of the frozen teacher starts frozen too
        p.requires_grad_(True)
    quantized = apply_quantization(student, spec) if spec.is_quantized else {}
    return student, have, quantized


def build_stages(teacher, task: Task, cfg: TrainConfig, compress_cfg: CompressConfig, kd_cfg: KDConfig, lmap,
                 train_data, device, quiet: bool):
    """The training stages of the KD mode, and the teacher-output cache's record. The cache is built here
    (once per run) when the stages' KD terms fit in `compress_cfg.teacher_cache_gb`."""
    if compress_cfg.kd == "none":
        stage_terms = [("labels", cfg.epochs, 1.0, None)]
    elif compress_cfg.kd == "one-stage":
        stage_terms = [("kd", cfg.epochs, 1.0, tuple(compress_cfg.kd_terms))]
    else:
        stage_terms = [("kd-intermediate", cfg.epochs * compress_cfg.stage1_share, compress_cfg.stage1_lr_factor,
                        ("hidden", "attention")),
                       ("kd-logits", cfg.epochs * (1 - compress_cfg.stage1_share), 1.0, ("logit",))]
    arch = architecture_of(teacher)
    if not arch.attention_scores:  # e.g. DeBERTa-v2: logit + hidden-state KD only (compress refused attention alone)
        stage_terms = [(name, ep, f, None if ts is None else tuple(t for t in ts if t != "attention"))
                       for name, ep, f, ts in stage_terms]
        if not quiet:
            print(f"[{task.name}] {arch.note}", file=sys.stderr)
    terms = {t for *_, ts in stage_terms for t in ts or ()}
    plan = plan_cache(train_data, teacher.config, lmap, terms, cfg.epochs if terms else 0.0,
                      compress_cfg.teacher_cache_gb)
    cache = None
    if terms and plan.use:
        t0 = time.perf_counter()
        cache = TeacherCache(teacher, train_data, lmap, terms, device, cfg.eval_batch_size, quiet)
        plan.reason += f", built in {time.perf_counter() - t0:.1f} s"
    if terms and not quiet:
        print(f"[{task.name}] teacher-output cache: {'on' if cache else 'off'} ({plan.reason})", file=sys.stderr)
    kd = make_kd_loss(teacher, task.is_regression, kd_cfg, lmap, cache)
    stages = [Stage(name, ep, lr_factor, label_objective if ts is None else kd(ts))
              for name, ep, lr_factor, ts in stage_terms]
    first_terms = {t: kd((t,)) for t in stage_terms[0][3] or ()}  # the first stage's terms one by one
    return stages, {"used": cache is not None, "reason": plan.reason, "bytes": plan.bytes}, first_terms


def compress(task_name: str, teacher_dir: str, out_dir: str, cfg: TrainConfig, spec: QuantSpec,
             compress_cfg: CompressConfig, kd_cfg: KDConfig | None = None, run: RunOptions | None = None) -> dict:
    """Train an XTC student of `teacher_dir` into `out_dir`; returns the run record (also its metrics.json)."""
    with run_folder_writer(out_dir):  # one writer per run folder, from the start
        kd_cfg, run = kd_cfg or KDConfig(), run or RunOptions()
        task = get_task(task_name)
        spec.validate()
        dev = pick_device(run.device)
        run_config = {"command": "compress", "task": task.name, **task.record(), "teacher": teacher_dir,
                      "init": compress_cfg.init, "train_file": compress_cfg.train_file, **asdict(cfg),
                      "quant": spec.to_dict(), **asdict(compress_cfg),
                      "kd_weights": asdict(kd_cfg), **data_settings(run)}
        run_config["kd_terms"] = list(compress_cfg.kd_terms)
        set_seed(cfg.seed)

        teacher = load_teacher(teacher_dir, task)
        arch = architecture_of(teacher)
        attention_only = compress_cfg.kd == "one-stage" and set(compress_cfg.kd_terms) == {"attention"}
        if not arch.attention_scores and attention_only:
            raise ValueError(f"{arch.note}; pass --kd-terms logit,hidden for a {arch.family} teacher")
        check_sequence_length(teacher, cfg.max_seq_length, "--teacher")
        tokenizer = load_tokenizer(teacher_dir)
        student, teacher_layers, quantized = build_student(teacher, compress_cfg, spec, task.num_labels)
        lmap = layer_maps(student.config.num_hidden_layers, teacher.config.num_hidden_layers, teacher_layers)
        extra = read_train_file(compress_cfg.train_file, task) if compress_cfg.train_file else None
        data = load_task_data(task, tokenizer, run.glue_dir, cfg.max_seq_length, run.max_train_samples,
                              run.max_eval_samples, train_split=extra, validation_samples=run.validation_samples,
                              subset=run.subset, data_seed=run.data_seed)
        train_data, eval_sets = data.train, data.evals
        # the train-vs-dev gap is scored on labelled examples: a --train-file's inputs carry the teacher's labels
        # only through KD, so its sample comes from the task's own drawn training rows (which such files include)
        sample_source = train_data if extra is None else encode(data.train_split, tokenizer, cfg.max_seq_length,
                                                                task.is_regression)
        resume = prepare_run_folder(out_dir, run_config, run.overwrite)  # after every check: a bad input writes nothing
        teacher.to(dev)
        stages, cache_record, term_losses = build_stages(teacher, task, cfg, compress_cfg, kd_cfg, lmap, train_data,
                                                         dev, run.quiet)
        what = (f"compress {task.name}: {student.config.num_hidden_layers}-layer student, W{spec.wbits}A{spec.abits}, "
                f"kd {compress_cfg.kd}, teacher cache {'on' if cache_record['used'] else 'off'}, "
                f"batch {cfg.batch_size}")
        precision = resolve_training_precision(cfg, dev, student.to(dev), stages[0].loss_fn, train_data, resume, what)
        cfg = replace(cfg, precision=precision.precision)  # the run records (and resumes with) what it used
        run_config["precision"] = precision.precision
        diagnostics = RunDiagnostics(student, sample_source, cfg.train_eval_examples, term_losses)
        result = train(student, stages, train_data, eval_sets, task, cfg, out_dir, run_config, dev, resume, run.quiet,
                       diagnostics, data.validation)
        size, teacher_size = model_size(student), model_size(teacher)
        record = run_record(task, result, run_config, run, dev, train_data, eval_sets, {
            "quantization": {**spec.to_dict(), "modules": {r: len(v) for r, v in quantized.items()}},
            "layers": {"student": student.config.num_hidden_layers, "teacher": teacher.config.num_hidden_layers,
                       "teacher_layers": teacher_layers},
            "layer_map": asdict(lmap), "kd": compress_cfg.kd, "kd_note": arch.note or None,
            "architecture": arch.family, "loss_terms": result["final_loss_terms"],
            "precision": precision.to_dict(), "teacher_cache": cache_record, "data": data.record,
            "kd_gradient": next((h["diagnostics"]["kd_gradient"] for h in result["history"]
                                 if "kd_gradient" in h.get("diagnostics", {})), None),
            "size": {**size, "teacher_fp32_bytes": teacher_size["fp32_bytes"],
                     "ratio_to_teacher": teacher_size["fp32_bytes"] / size["quantized_bytes"]}})
        return finish_run(out_dir, student, tokenizer, record,
                          {DEV_PREDICTIONS_FILE: predictions_record(task, result, eval_sets)})
