"""The nine GLUE tasks: where their text and labels live, and how they are scored."""
from __future__ import annotations

from dataclasses import dataclass


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

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)

    @property
    def is_pair(self) -> bool:
        return len(self.text_columns) == 2


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
             "pearson", hub_text_columns=("sentence1", "sentence2")),
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


def get_task(name: str) -> Task:
    key = name.lower().replace("-", "")
    if key not in TASKS:
        raise ValueError(f"unknown GLUE task {name!r}; choose one of: {', '.join(TASKS)}")
    return TASKS[key]
