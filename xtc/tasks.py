"""The tasks: the nine GLUE tasks, and tasks defined by their data (a spec: files or a Hugging Face dataset, text
and label columns, labels, problem type, metrics); where their text and labels live, and how they are scored."""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, fields

from xtc.config import TaskSpec
from xtc.settings import add_settings


@dataclass(frozen=True)
class Task:
    name: str  # our name, also the Hugging Face `nyu-mll/glue` config name
    folder: str  # folder in the download_glue_data.py layout
    text_columns: tuple[str, ...]  # header names in the local .tsv files
    label_column: str
    labels: tuple[str, ...] | None  # label strings in id order (None: regression)
    metrics: tuple[str, ...]
    selection_metric: str
    eval_splits: tuple[str, ...] = ("dev",)
    hub_text_columns: tuple[str, ...] = ()
    has_header: bool = True
    # CoLA's files have no header: text and label are picked by column position.
    column_positions: tuple[int, ...] = ()
    spec: TaskSpec | None = None  # a task defined by its data (None: GLUE)
    genre_column: str | None = None  # a column of the training file whose values stratify subsets (STS-B)

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)

    @property
    def is_pair(self) -> bool:
        return len(self.text_columns) == 2

    def record(self) -> dict:
        """What a run records of its task beyond the name: a task of your own, its whole spec (so resuming with
        other data files or labels is refused like any changed setting); nothing for GLUE."""
        if self.spec is None:
            return {}
        from dataclasses import asdict

        return {"task_spec": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.spec).items()}}


TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task("cola", "CoLA", ("sentence",), "label", ("0", "1"), ("mcc", "accuracy"), "mcc",
             hub_text_columns=("sentence",), has_header=False, column_positions=(3, 1)),
        Task("sst2", "SST-2", ("sentence",), "label", ("0", "1"), ("accuracy",), "accuracy",
             hub_text_columns=("sentence",)),
        Task("mrpc", "MRPC", ("#1 String", "#2 String"), "Quality", ("0", "1"), ("accuracy", "f1"),
             "accuracy", hub_text_columns=("sentence1", "sentence2")),
        Task("stsb", "STS-B", ("sentence1", "sentence2"), "score", None, ("pearson", "spearman"),
             "pearson", hub_text_columns=("sentence1", "sentence2"), genre_column="genre"),
        Task("qqp", "QQP", ("question1", "question2"), "is_duplicate", ("0", "1"), ("accuracy", "f1"),
             "accuracy", hub_text_columns=("question1", "question2")),
        Task("mnli", "MNLI", ("sentence1", "sentence2"), "gold_label",
             ("entailment", "neutral", "contradiction"), ("accuracy", "accuracy_mm"), "accuracy",
             eval_splits=("dev_matched", "dev_mismatched"), hub_text_columns=("premise", "hypothesis")),
        Task("qnli", "QNLI", ("question", "sentence"), "label", ("entailment", "not_entailment"),
             ("accuracy",), "accuracy", hub_text_columns=("question", "sentence")),
        Task("rte", "RTE", ("sentence1", "sentence2"), "label", ("entailment", "not_entailment"),
             ("accuracy",), "accuracy", hub_text_columns=("sentence1", "sentence2")),
        Task("wnli", "WNLI", ("sentence1", "sentence2"), "label", ("0", "1"), ("accuracy",), "accuracy",
             hub_text_columns=("sentence1", "sentence2")),
    ]
}


SPEC_SUFFIXES = (".yaml", ".yml", ".json")
TASK_NAME = re.compile(r"^[a-z][a-z0-9]*$")  # a folder name in runs/ and the study's task lists (task~NAME)


def custom_task(name: str, spec: TaskSpec) -> Task:
    """The Task a spec defines (checked: one or two text columns, declared labels, fitting metrics)."""
    if not TASK_NAME.match(name) or name.replace("-", "") in TASKS:
        raise ValueError(f"task name {name!r}: use lower-case letters and digits (starting with a letter), "
                         f"not a GLUE task's name")
    spec.validate(name)
    regression = spec.problem == "regression"
    metrics = spec.metrics or (("pearson", "spearman") if regression else ("accuracy", "f1"))
    return Task(name, "", spec.text_columns, spec.label_column, None if regression else spec.labels, metrics,
                spec.selection_metric or metrics[0], eval_splits=("dev",), spec=spec)


def load_task_spec(path: str) -> Task:
    """A task from a YAML or JSON spec file: the TaskSpec keys plus `name` (default: the file's stem); file
    paths are relative to the spec's folder."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"task spec {path} does not exist; --task takes a GLUE task ({', '.join(TASKS)}) or "
                                f"a YAML/JSON task spec file")
    try:
        with open(path, encoding="utf-8") as f:
            if path.endswith(".json"):
                data = json.load(f)
            else:
                import yaml

                data = yaml.safe_load(f)
    except (ValueError, UnicodeDecodeError) as exc:  # json.JSONDecodeError is a ValueError
        raise ValueError(f"task spec {path}: not valid {'JSON' if path.endswith('.json') else 'YAML'} "
                         f"({str(exc).splitlines()[0]})") from None
    except Exception as exc:  # yaml.YAMLError
        raise ValueError(f"task spec {path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict):
        raise ValueError(f"task spec {path}: expected a mapping of keys (name, train_data, dev_data, text_columns, "
                         f"label_column, ...), got {type(data).__name__}")
    known = {f.name for f in fields(TaskSpec)}
    unknown = sorted(set(data) - known - {"name"})
    if unknown:
        raise ValueError(f"task spec {path}: unknown key(s) {unknown}; known keys: name, {', '.join(sorted(known))}")
    name = str(data.pop("name", None) or re.sub(r"[^a-z0-9]", "", os.path.splitext(os.path.basename(path))[0].lower()))
    folder = os.path.dirname(os.path.abspath(path))
    if not data.get("hub_dataset"):
        for key in ("train_data", "dev_data", "test_data"):
            if data.get(key) is not None:
                data[key] = os.path.join(folder, str(data[key]))
    try:
        spec = TaskSpec(**data)
    except ValueError as exc:
        raise ValueError(f"task spec {path}: {exc}") from None
    return custom_task(name, spec)


def resolve_task(task: str, spec: TaskSpec | None = None) -> Task:
    """`--task` as given: a GLUE name, a spec file (.yaml/.yml/.json), or a new name defined by the TaskSpec
    flags (--train-data, --dev-data, --text-columns, --label-column, --labels, ...)."""
    defined = spec is not None and spec.given
    if task.lower().endswith(SPEC_SUFFIXES):
        if defined:
            raise ValueError(f"--task {task} is a spec file; give the task's settings there, not as flags too")
        return load_task_spec(task)
    key = task.lower().replace("-", "")
    if key in TASKS:
        if defined:
            raise ValueError(f"--task {task} is a GLUE task; the data flags (--train-data, ...) define a task of your "
                             f"own: give it another name")
        return TASKS[key]
    if not defined:
        raise ValueError(f"unknown GLUE task {task!r}; choose one of: {', '.join(TASKS)}, or pass a task spec file "
                         f"(.yaml/.json), or define the task with --train-data, --dev-data, --text-columns, "
                         f"--label-column (and --labels)")
    return custom_task(task, spec)


def get_task(name) -> Task:
    """A Task as is, or a GLUE task (or spec file) by name."""
    if isinstance(name, Task):
        return name
    return resolve_task(name)


TASK_HELP = (f"a GLUE task ({', '.join(TASKS)}), a task spec file (.yaml/.json: your own data), or the name of "
             f"a task the flags below define")


def add_task_args(p) -> None:
    """--task and the flags that define a task of your own (xtc.config.TaskSpec)."""
    p.add_argument("--task", required=True, help=TASK_HELP)
    add_settings(p, "task_spec", TaskSpec, "your own task (with --task NAME; or put these keys in a spec file)")
