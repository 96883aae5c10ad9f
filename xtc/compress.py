"""The XTC steps as one command: an optional layer-reduced copy of the teacher, optional extreme
quantization (fake-quant QAT with latent fp32 weights), trained with knowledge distillation from the
fine-tuned teacher (none / one-stage / two-stage)."""
from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass, replace

import torch

from xtc.data import load_task_data, model_inputs, read_train_file
from xtc.distill import (KDConfig, evenly_spaced_layers, forward_with_internals, kd_loss, layer_maps,
                         parse_layer_list, reduce_layers)
from xtc.finetune import label_objective
from xtc.models import load_classifier, load_tokenizer, pick_device
from xtc.precision import resolve_precision
from xtc.quant import QuantSpec, apply_quantization, model_size
from xtc.tasks import get_task
from xtc.teacher_cache import TeacherCache, plan_cache
from xtc.train import Stage, TrainConfig, finish_run, prepare_run_folder, set_seed, train, versions

KD_MODES = ("none", "one-stage", "two-stage")


@dataclass
class CompressConfig:
    kd: str = "one-stage"
    kd_terms: tuple[str, ...] = ("logit", "hidden", "attention")  # one-stage terms
    layers: int | None = None  # k evenly spaced teacher layers
    teacher_layers: str | None = None  # or an explicit list "1,3,5"
    stage1_share: float = 0.5  # two-stage: share of the epochs spent on intermediate-layer KD
    stage1_lr_factor: float = 2.5
    teacher_cache_gb: float = 6.0  # memory budget of the teacher-output cache (MRPC, full KD: 4.9 GiB); 0: live


def _student(teacher, init: str | None, cc: CompressConfig, num_labels: int):
    """The model to train: a copy of `init` (e.g. a step-1 layer-reduced student) or of the teacher,
    layer-reduced when asked; returns it with its teacher-layer list (None: no reduction)."""
    n_teacher = teacher.config.num_hidden_layers
    if cc.layers is not None and cc.teacher_layers is not None:
        raise ValueError("give either --layers k or --teacher-layers LIST, not both")
    wanted = None
    if cc.teacher_layers is not None:
        wanted = parse_layer_list(cc.teacher_layers, n_teacher)
    elif cc.layers is not None:
        wanted = evenly_spaced_layers(n_teacher, cc.layers)
    if init is None:
        if wanted is None or wanted == list(range(n_teacher)):
            return reduce_layers(teacher, list(range(n_teacher))), None
        return reduce_layers(teacher, wanted), wanted
    student = load_classifier(init, num_labels)
    if getattr(student.config, "xtc_quant", None):
        raise ValueError(f"--init {init} is already quantized; start quantization from a full-precision model")
    have = getattr(student.config, "xtc_teacher_layers", None)
    if wanted is not None and wanted != have:
        raise ValueError(f"--init {init} was reduced to teacher layers {have}, but {wanted} were asked for; "
                         f"drop --layers/--teacher-layers to keep the init's layers")
    if have is None and student.config.num_hidden_layers != n_teacher:
        raise ValueError(f"--init {init} has {student.config.num_hidden_layers} layers but records no teacher "
                         f"layer list; it must be an xtc student of this teacher")
    return student, have


def make_kd_loss(teacher, regression: bool, kd_cfg: KDConfig, layer_map, cache: TeacherCache | None = None):
    """`kd(terms)` gives a stage's loss function. The teacher's outputs come from `cache` (built once per run)
    or from a live forward without gradients, once per batch, computing only what the stage's terms need."""
    teacher.eval()

    def kd(terms):
        need_att, need_hidden = "attention" in terms, "hidden" in terms

        def loss_fn(model, batch):
            inputs = model_inputs(batch)
            if cache is not None and "index" in batch:
                t = cache.lookup(batch["index"], inputs["input_ids"].shape[1], inputs["input_ids"].device,
                                 need_hidden=need_hidden, need_attention=need_att)
            else:
                with torch.no_grad():  # not inference_mode: its tensors could not be saved for backward
                    t = forward_with_internals(teacher, inputs, attentions=need_att, hidden=need_hidden)
            s = forward_with_internals(model, inputs, attentions=need_att, hidden=need_hidden)
            return kd_loss(s, t, layer_map, kd_cfg, regression, terms, batch["attention_mask"])

        return loss_fn

    return kd


def compress(task_name: str, teacher_dir: str, out_dir: str, cfg: TrainConfig, spec: QuantSpec,
             cc: CompressConfig, kd_cfg: KDConfig = KDConfig(), init: str | None = None,
             train_file: str | None = None, glue_dir: str | None = None, max_train_samples: int | None = None,
             max_eval_samples: int | None = None, overwrite: bool = False, device: str | None = None,
             quiet: bool = False) -> dict:
    task = get_task(task_name)
    spec.validate()
    if cc.kd not in KD_MODES:
        raise ValueError(f"unknown --kd {cc.kd!r}; choose one of {', '.join(KD_MODES)}")
    if train_file and cc.kd == "none":
        raise ValueError("--train-file inputs carry no labels (the teacher labels them through KD); "
                         "use --kd one-stage or two-stage with it")
    if not cc.teacher_cache_gb >= 0:
        raise ValueError(f"--teacher-cache-gb must be >= 0 (got {cc.teacher_cache_gb}); 0 turns the cache off")
    if not 0 < cc.stage1_share < 1:
        raise ValueError(f"--stage1-share must be in (0, 1), got {cc.stage1_share}")
    if not os.path.isfile(os.path.join(teacher_dir, "metrics.json")) and not os.path.isfile(
            os.path.join(teacher_dir, "config.json")):
        raise FileNotFoundError(f"--teacher {teacher_dir} is not a fine-tuned model folder; make one with "
                                f"`xtc finetune --task {task.name} --out DIR`")
    dev = pick_device(device)
    precision = resolve_precision(cfg.precision, dev)
    cfg = replace(cfg, precision=precision.precision)  # the run records (and resumes with) what it used
    run_config = {"command": "compress", "task": task.name, "teacher": teacher_dir, "init": init,
                  "train_file": train_file, **asdict(cfg), "quant": spec.to_dict(), **asdict(cc),
                  "kd_weights": asdict(kd_cfg), "max_train_samples": max_train_samples,
                  "max_eval_samples": max_eval_samples}
    run_config["kd_terms"] = list(cc.kd_terms)
    resume = prepare_run_folder(out_dir, run_config, overwrite)
    set_seed(cfg.seed)

    teacher = load_classifier(teacher_dir)
    if teacher.config.num_labels != task.num_labels:
        raise ValueError(f"teacher {teacher_dir} has {teacher.config.num_labels} outputs, task {task.name} "
                         f"needs {task.num_labels}: fine-tune a teacher on {task.name} first")
    if getattr(teacher.config, "xtc_quant", None):
        raise ValueError(f"teacher {teacher_dir} is a quantized student; distil from a full-precision teacher")
    for p in teacher.parameters():
        p.requires_grad_(False)
    tokenizer = load_tokenizer(teacher_dir)
    student, teacher_layers = _student(teacher, init, cc, task.num_labels)
    for p in student.parameters():  # a copy of the frozen teacher starts frozen too
        p.requires_grad_(True)
    quantized = apply_quantization(student, spec) if spec.is_quantized else {}
    lmap = layer_maps(student.config.num_hidden_layers, teacher.config.num_hidden_layers, teacher_layers)

    extra = read_train_file(train_file, task) if train_file else None
    train_data, eval_sets = load_task_data(task, tokenizer, glue_dir, cfg.max_seq_length, max_train_samples,
                                           max_eval_samples, train_split=extra)
    teacher.to(dev)
    if cc.kd == "none":
        stage_terms = [("labels", cfg.epochs, 1.0, None)]
    elif cc.kd == "one-stage":
        stage_terms = [("kd", cfg.epochs, 1.0, tuple(cc.kd_terms))]
    else:
        stage_terms = [("kd-intermediate", cfg.epochs * cc.stage1_share, cc.stage1_lr_factor, ("hidden", "attention")),
                       ("kd-logits", cfg.epochs * (1 - cc.stage1_share), 1.0, ("logit",))]
    terms = {t for *_, ts in stage_terms for t in ts or ()}
    plan = plan_cache(train_data, teacher.config, lmap, terms, cfg.epochs if terms else 0.0, cc.teacher_cache_gb)
    cache = None
    if terms and plan.use:
        t0 = time.perf_counter()
        cache = TeacherCache(teacher, train_data, lmap, terms, dev, cfg.eval_batch_size, quiet)
        plan.reason += f", built in {time.perf_counter() - t0:.1f} s"
    if terms and not quiet:
        print(f"[{task.name}] teacher-output cache: {'on' if cache else 'off'} ({plan.reason})", file=sys.stderr)
    kd = make_kd_loss(teacher, task.is_regression, kd_cfg, lmap, cache)
    stages = [Stage(name, ep, lr_factor, label_objective if ts is None else kd(ts))
              for name, ep, lr_factor, ts in stage_terms]
    result = train(student, stages, train_data, eval_sets, task, cfg, out_dir, run_config, dev, resume, quiet)
    size = model_size(student)
    teacher_size = model_size(teacher)
    record = {"task": task.name, "selection_metric": task.selection_metric, **result,
              "quantization": {**spec.to_dict(), "modules": {r: len(v) for r, v in quantized.items()}},
              "layers": {"student": student.config.num_hidden_layers, "teacher": teacher.config.num_hidden_layers,
                         "teacher_layers": teacher_layers},
              "layer_map": asdict(lmap), "kd": cc.kd, "loss_terms": result["final_loss_terms"],
              "precision": precision.to_dict(),
              "teacher_cache": {"used": cache is not None, "reason": plan.reason, "bytes": plan.bytes},
              "size": {**size, "teacher_fp32_bytes": teacher_size["fp32_bytes"],
                       "ratio_to_teacher": teacher_size["fp32_bytes"] / size["quantized_bytes"]},
              "config": {**run_config, "device": str(dev), "glue_dir": glue_dir or os.environ.get("XTC_GLUE_DIR"),
                         "train_size": len(train_data), "eval_sizes": {k: len(v) for k, v in eval_sets.items()}},
              "versions": versions()}
    return finish_run(out_dir, student, tokenizer, record)
