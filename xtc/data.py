"""GLUE data: read a split (local download_glue_data.py folder or the Hugging Face hub), tokenize once,
and batch with dynamic padding (optionally grouping similar lengths to waste less compute on padding)."""
from __future__ import annotations

import csv
import json
import os
import sys
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch

from xtc.files import sha256
from xtc.tasks import Task

GLUE_DIR_ENV = "XTC_GLUE_DIR"
HUB_DATASET = "nyu-mll/glue"
_HUB_SPLITS = {"train": "train", "dev": "validation", "dev_matched": "validation_matched",
               "dev_mismatched": "validation_mismatched"}

csv.field_size_limit(sys.maxsize)


class DataError(ValueError):
    """A GLUE file or directory that cannot be used; the message names the file, line and the fix."""


@dataclass
class Split:
    task: str
    name: str
    texts: list[tuple[str, ...]]  # one tuple per example: (sentence,) or (sentence_a, sentence_b)
    labels: list  # int ids, or floats for regression
    source: str = ""
    has_labels: bool = True  # False: a test split without its label column (placeholder labels)
    genres: list[str] | None = None  # the task's genre column per example (STS-B's train.tsv), for subset strata

    def __len__(self) -> int:
        return len(self.labels)


def resolve_glue_dir(glue_dir: str | None) -> str | None:
    """`--glue-dir` wins, then $XTC_GLUE_DIR; None means: use the hub."""
    path = glue_dir or os.environ.get(GLUE_DIR_ENV) or None
    if path is not None and not os.path.isdir(path):
        raise DataError(f"GLUE directory {path!r} does not exist; pass --glue-dir (or set {GLUE_DIR_ENV}) "
                        "to a folder in the download_glue_data.py layout (CoLA/, SST-2/, MRPC/, ...)")
    return path


def label_id(task: Task, raw: str, where: str):
    """A raw label as the model's target: a float for regression, else the label's index (one-line error)."""
    raw = raw.strip()
    if task.is_regression:
        try:
            value = float(raw)
        except ValueError:
            raise DataError(f"{where}: label {raw!r} is not a number (task {task.name} is a regression task)") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise DataError(f"{where}: label {raw!r} is not a finite number (task {task.name} is a regression task)")
        return value
    if raw not in task.labels:
        raise DataError(f"{where}: label {raw!r} is not one of {list(task.labels)} for task {task.name}")
    return task.labels.index(raw)


def _bad_utf8_line(path: str) -> str:
    """`path:LINE` of the first line that is not valid UTF-8 (for the error message)."""
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return f"{path}:{line_no}"
    return path


def tsv_rows(path: str):
    """(line number, fields) of every non-empty row of a tab-separated file, the one way xtc reads one: utf-8-sig
    strips MRPC's byte-order mark, QUOTE_NONE because GLUE text contains bare quotes; a line that is not UTF-8 is
    a DataError naming it."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        try:
            for row in rows:
                if row and row != [""]:
                    yield rows.line_num, row
        except UnicodeDecodeError as exc:
            raise DataError(f"{_bad_utf8_line(path)}: not UTF-8 text ({exc.reason} at byte "
                            f"0x{exc.object[exc.start]:02x}); re-save the file as UTF-8") from None


def read_tsv_split(task: Task, split: str, glue_dir: str) -> Split:
    """Read `<glue_dir>/<Task>/<split>.tsv` exactly as download_glue_data.py wrote it."""
    path = os.path.join(glue_dir, task.folder, f"{split}.tsv")
    if not os.path.isfile(path):
        have = sorted(os.listdir(os.path.join(glue_dir, task.folder))) if os.path.isdir(
            os.path.join(glue_dir, task.folder)) else []
        raise DataError(f"missing GLUE file {path} (task {task.name}, split {split}); "
                        f"found {have or 'no such folder'}. Download it with download_glue_data.py "
                        f"or point --glue-dir elsewhere")
    texts, labels, genres = [], [], []
    rows = tsv_rows(path)
    if task.has_header:
        _, header = next(rows, (None, None))
        if header is None:
            raise DataError(f"{path}: file is empty; it needs a header line and one example per line "
                            f"(re-download it with download_glue_data.py)")
        missing = [c for c in (*task.text_columns, task.label_column) if c not in header]
        if missing:
            raise DataError(f"{path}:1: header lacks column(s) {missing}; found {header}")
        text_pos = [header.index(c) for c in task.text_columns]
        label_pos = header.index(task.label_column)
        genre_pos = header.index(task.genre_column) if task.genre_column in header else None
        width = len(header)
    else:
        text_pos, label_pos, width = [task.column_positions[0]], task.column_positions[1], None
        genre_pos = None
    for line, row in rows:
        if (width is not None and len(row) < width) or len(row) <= max(*text_pos, label_pos):
            need = width or max(*text_pos, label_pos) + 1
            raise DataError(f"{path}:{line}: malformed row with {len(row)} tab-separated fields, expected "
                            f"{need}; fix or delete that line (a tab inside the text splits a field)")
        texts.append(tuple(row[p] for p in text_pos))
        labels.append(label_id(task, row[label_pos], f"{path}:{line}"))
        if genre_pos is not None:
            genres.append(row[genre_pos])
    if not labels:
        raise DataError(f"{path}: no examples{' after the header line' if task.has_header else ''}; the {split} split "
                        f"must hold at least one example per line (re-download it with download_glue_data.py)")
    return Split(task.name, split, texts, labels, source=path, genres=genres or None)


def read_input_tsv(path: str, task: Task) -> tuple[Split, bool]:
    """A TSV of inputs with a header (`xtc predict --input`): the task's own text columns (e.g. `sentence`; MRPC
    `#1 String`, `#2 String`) or `text_a`[, `text_b`]; an optional label column (the task's or `label`) gives
    metrics. Returns the split and whether it has labels."""
    if not os.path.isfile(path):
        raise DataError(f"--input {path} does not exist")
    rows = tsv_rows(path)
    _, header = next(rows, (None, None))
    if not header:
        raise DataError(f"{path}: empty file; expected a header row naming the text columns")
    generic = ("text_a", "text_b")[: len(task.text_columns)]
    for names in (task.text_columns, generic):
        if all(c in header for c in names):
            text_pos = [header.index(c) for c in names]
            break
    else:
        raise DataError(f"{path}:1: header {header} lacks the text column(s) {list(task.text_columns)} "
                        f"(or {list(generic)}) that task {task.name} reads")
    label_name = next((c for c in (task.label_column, "label") if c in header), None)
    label_pos = header.index(label_name) if label_name else None
    need = max(text_pos + ([label_pos] if label_pos is not None else []))
    texts, labels = [], []
    for line, row in rows:
        if len(row) <= need:
            raise DataError(f"{path}:{line}: {len(row)} tab-separated fields, expected {len(header)} as in the "
                            f"header")
        texts.append(tuple(row[p] for p in text_pos))
        if label_pos is not None:
            labels.append(label_id(task, row[label_pos], f"{path}:{line}"))
    if not texts:
        raise DataError(f"{path} holds no examples")
    return Split(task.name, "input", texts, labels or [0.0 if task.is_regression else 0] * len(texts),
                 source=path), bool(labels)


def read_hub_split(task: Task, split: str) -> Split:
    try:
        import datasets

        ds = datasets.load_dataset(HUB_DATASET, task.name, split=_HUB_SPLITS[split])
    except Exception as exc:  # offline, hub down, missing cache: one actionable message
        raise DataError(f"could not load GLUE {task.name}/{split} from the Hugging Face hub ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}). Without network, point at a local copy "
                        f"in the download_glue_data.py layout with --glue-dir DIR or {GLUE_DIR_ENV}=DIR") from exc
    texts = list(zip(*(ds[c] for c in task.hub_text_columns)))
    labels = [float(x) for x in ds["label"]] if task.is_regression else [int(x) for x in ds["label"]]
    # the hub's STS-B has no genre column: its subsets are stratified by score bin only
    return Split(task.name, split, texts, labels, source=f"hub:{HUB_DATASET}/{task.name}/{_HUB_SPLITS[split]}")


# ---------------------------------------------------------------- tasks defined by their data (xtc.tasks.TaskSpec)
def _read_table(path: str, fmt: str | None):
    """A data file as a pandas DataFrame of text cells (CSV, TSV, JSON Lines or Parquet) and how its rows are
    numbered in messages (line of a text file, or row of a Parquet file)."""
    import pandas as pd

    if not os.path.isfile(path):
        raise DataError(f"data file {path} does not exist; fix the path in the task spec (--train-data/--dev-data)")
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    fmt = fmt or {"csv": "csv", "tsv": "tsv", "jsonl": "jsonl", "json": "jsonl", "parquet": "parquet"}.get(ext)
    if fmt is None:
        raise DataError(f"{path}: cannot tell the format from the extension {ext!r}; name it .csv, .tsv, .jsonl or "
                        f".parquet, or pass --data-format")
    try:
        if fmt in ("csv", "tsv"):
            frame = pd.read_csv(path, sep="," if fmt == "csv" else "\t", dtype=str, keep_default_na=False,
                                encoding="utf-8-sig", quoting=csv.QUOTE_MINIMAL if fmt == "csv" else csv.QUOTE_NONE)
            return frame, "line", 2  # row i is on line i + 2 (after the header)
        if fmt == "jsonl":
            return pd.read_json(path, lines=True, dtype=False), "line", 1
        return pd.read_parquet(path), "row", 0
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty; it needs a header and one example per row") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{_bad_utf8_line(path)}: not UTF-8 text ({exc.reason}); re-save the file as UTF-8") from None
    except (ValueError, pd.errors.ParserError, OSError, ImportError) as exc:
        raise DataError(f"{path}: cannot read it as {fmt} ({' '.join(str(exc).split())[:200]})") from None


def read_custom_split(task: Task, split: str) -> Split:
    """A split of a task defined by its data, with the same checks as GLUE files: the columns exist, every
    label is declared (or numeric for regression), text is present, the split is not empty."""
    spec = task.spec
    where_spec = {"train": spec.train_data, "dev": spec.dev_data, "test": spec.test_data}[split]
    if spec.hub_dataset:
        import datasets

        hub_id, _, config = spec.hub_dataset.partition(":")
        try:
            frame = datasets.load_dataset(hub_id, config or None, split=where_spec).to_pandas()
        except Exception as exc:  # offline, unknown id or split: one actionable message
            raise DataError(f"could not load {spec.hub_dataset} split {where_spec!r} from the Hugging Face hub "
                            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); without "
                            f"network, save the splits as files and name them with --train-data/--dev-data") from None
        source, unit, first = f"hub:{spec.hub_dataset}/{where_spec}", "row", 0
    else:
        source = where_spec
        frame, unit, first = _read_table(where_spec, spec.data_format)
    columns = [str(c) for c in frame.columns]
    missing = [c for c in task.text_columns if c not in columns]
    label_missing = task.label_column not in columns
    if missing or (label_missing and split != "test"):
        raise DataError(f"{source}: missing column(s) {missing + ([task.label_column] if label_missing else [])} "
                        f"(task {task.name}); found {columns}. Fix text_columns/label_column in the task spec")
    if len(frame) == 0:
        raise DataError(f"{source}: the {split} split of task {task.name} holds no examples")
    texts, labels = [], []
    cols = [frame[c].tolist() for c in task.text_columns]
    raw_labels = None if label_missing else frame[task.label_column].tolist()
    for i in range(len(frame)):
        where = f"{source}:{i + first}" if unit == "line" else f"{source} row {i}"
        row = tuple(c[i] for c in cols)
        if any(t is None or (isinstance(t, float) and t != t) for t in row):
            raise DataError(f"{where}: empty text in column(s) {list(task.text_columns)}; fill or delete that "
                            f"row")
        texts.append(tuple(str(t) for t in row))
        if raw_labels is not None:
            value = raw_labels[i]
            if isinstance(value, float) and value.is_integer() and not task.is_regression:
                value = int(value)  # a numeric label column read as floats (Parquet, JSON): 2.0 is label "2"
            labels.append(label_id(task, "" if value is None else str(value), where))
    if raw_labels is None:
        labels = [0.0 if task.is_regression else 0] * len(texts)
    return Split(task.name, split, texts, labels, source=source, has_labels=raw_labels is not None)


def load_split(task: Task, split: str, glue_dir: str | None = None, max_samples: int | None = None) -> Split:
    """Load one split ("train", "dev", "dev_matched", "dev_mismatched"; "test" of a task defined by its data,
    when it names one), optionally its first `max_samples` (a training subset: `select_training_rows`)."""
    custom_test = task.spec is not None and task.spec.test_data is not None
    if split not in ("train", *task.eval_splits, *(("test",) if custom_test else ())):
        raise DataError(f"task {task.name} has no split {split!r}; it has train, {', '.join(task.eval_splits)}"
                        f"{', test' if custom_test else ''}")
    if task.spec is not None:
        data = read_custom_split(task, split)
    else:
        path = resolve_glue_dir(glue_dir)
        data = read_tsv_split(task, split, path) if path else read_hub_split(task, split)
    if max_samples is not None and max_samples < len(data):
        data = take_rows(data, list(range(max_samples)))
    return data


def take_rows(data: Split, rows: list[int], name: str | None = None) -> Split:
    """The examples `rows` of `data`, in that order."""
    return Split(data.task, name or data.name, [data.texts[i] for i in rows], [data.labels[i] for i in rows],
                 data.source, data.has_labels, None if data.genres is None else [data.genres[i] for i in rows])


# ---------------------------------------------------------------- training subsets and the validation split
SCORE_BINS = 5


def row_strata(task: Task, data: Split) -> list[str]:
    """Each example's stratum: its label ("0", "1", ...) for classification; for regression the score bin
    (STS-B: the score's integer part clipped to 0..4; a task of your own: five equal-width bins over its
    training scores), prefixed by the genre where the task has one ("main-captions|3")."""
    if not task.is_regression:
        return [str(y) for y in data.labels]
    lo, hi = (0.0, 5.0) if task.spec is None else (min(data.labels), max(data.labels))
    width = (hi - lo) / SCORE_BINS or 1.0
    bins = [str(min(SCORE_BINS - 1, max(0, int((y - lo) // width)))) for y in data.labels]
    return bins if data.genres is None else [f"{g}|{b}" for g, b in zip(data.genres, bins)]


def draw_rows(strata: list[str], n: int | None, how: str, seed: int, salt: int,
              exclude: frozenset[int] = frozenset()) -> list[int]:
    """`n` row indices (ascending) out of those not in `exclude`: the first `n` ("first"), or a seeded sample
    with each stratum's share of the rows ("stratified": quotas by largest remainder, rows drawn at random
    within each stratum). A pure function of its arguments; `salt` keeps two draws of one seed independent."""
    pool = [i for i in range(len(strata)) if i not in exclude]
    if n is None or n >= len(pool):
        return pool
    if how == "first":
        return pool[:n]
    by_stratum: dict[str, list[int]] = {}
    for i in pool:
        by_stratum.setdefault(strata[i], []).append(i)
    names = sorted(by_stratum)
    exact = {s: n * len(by_stratum[s]) / len(pool) for s in names}
    quota = {s: int(exact[s]) for s in names}
    for s in sorted(names, key=lambda s: (-(exact[s] - quota[s]), s))[:n - sum(quota.values())]:
        quota[s] += 1
    rng = np.random.default_rng([seed, salt])
    chosen = []
    for s in names:
        rows = by_stratum[s]
        chosen += [rows[j] for j in rng.permutation(len(rows))[:quota[s]]]
    return sorted(chosen)


def selection_record(rows: list[int], strata: list[str], available: list[int], how: str, seed: int) -> dict:
    """What a run records of the rows it used: how they were drawn, how many of how many, the sha256 of the
    index list (json.dumps, in order) and the per-stratum counts of the drawn and the available rows."""
    return {"how": how, "seed": seed, "n": len(rows), "of": len(available),
            "sha256": sha256(json.dumps(rows).encode()),
            "strata": dict(sorted(Counter(strata[i] for i in rows).items())),
            "strata_available": dict(sorted(Counter(strata[i] for i in available).items()))}


@dataclass
class Selection:
    """The rows of the training split a run trains on and those it selects its checkpoint on (disjoint)."""
    train: list[int]
    validation: list[int]
    record: dict  # {"train": selection_record, "validation": selection_record or None}


def select_training_rows(task: Task, full: Split, max_train_samples: int | None, validation_samples: int,
                         subset: str, data_seed: int) -> Selection:
    """The validation rows first (a stratified draw of `validation_samples`, at most a fifth of the split),
    then the training subset (`max_train_samples`, drawn by `subset`) from the rows left. Both depend only on
    the data and (`data_seed`, the settings): every arm and run seed of a task gets the same rows."""
    strata = row_strata(task, full)
    everything = list(range(len(full)))
    n_val = min(validation_samples, len(full) // 5)
    validation = draw_rows(strata, n_val, "stratified", data_seed, salt=1) if n_val else []
    held = frozenset(validation)
    train = draw_rows(strata, max_train_samples, subset, data_seed, salt=2, exclude=held)
    rest = [i for i in everything if i not in held]
    return Selection(train, validation, {
        "train": selection_record(train, strata, rest, subset, data_seed),
        "validation": selection_record(validation, strata, everything, "stratified", data_seed) if validation
        else None})


def load_training_split(task: Task, glue_dir: str | None, max_train_samples: int | None = None,
                        validation_samples: int = 0, subset: str = "first",
                        data_seed: int = 0) -> tuple[Split, Split | None, dict]:
    """The training subset, the validation split (None when there is none) and their record for metrics.json."""
    full = load_split(task, "train", glue_dir)
    sel = select_training_rows(task, full, max_train_samples, validation_samples, subset, data_seed)
    validation = take_rows(full, sel.validation, "validation") if sel.validation else None
    return take_rows(full, sel.train), validation, sel.record


def split_stats(task: Task, glue_dir: str | None) -> dict:
    """Sizes and label counts of every split that exists (JSON-ready)."""
    out = {"task": task.name, "splits": {}}
    for split in ("train", *task.eval_splits):
        try:
            data = load_split(task, split, glue_dir)
        except DataError as exc:
            if "missing GLUE file" in str(exc):
                out["splits"][split] = {"available": False}
                continue
            raise
        entry = {"available": True, "size": len(data), "source": data.source}
        if task.is_regression:
            t = torch.tensor(data.labels)
            entry["label_mean"], entry["label_std"] = float(t.mean()), float(t.std())
        else:
            counts = Counter(data.labels)
            entry["label_counts"] = {task.labels[i]: counts.get(i, 0) for i in range(task.num_labels)}
        out["splits"][split] = entry
    return out


# ---------------------------------------------------------------- tokenization and batching
@dataclass
class Encoded:
    """A tokenized split: unpadded token ids per example, padded per batch by `collate`."""
    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    labels: list
    regression: bool = False
    lengths: list[int] = field(default_factory=list)
    pad_id: int = 0  # the tokenizer's padding id (BERT 0, RoBERTa 1)

    def __post_init__(self):
        self.lengths = [len(x) for x in self.input_ids]
        self.pad_id = int(self.pad_id or 0)

    def __len__(self) -> int:
        return len(self.input_ids)


def encode(split: Split, tokenizer, max_length: int = 128, regression: bool = False) -> Encoded:
    columns = list(zip(*split.texts)) if split.texts else [[]]
    enc = tokenizer(*[list(c) for c in columns], truncation=True, max_length=max_length,
                    padding=False, return_token_type_ids=True)
    return Encoded(enc["input_ids"], enc["token_type_ids"], split.labels, regression,
                   pad_id=tokenizer.pad_token_id or 0)


def collate(data: Encoded, indices: list[int], pad_id: int | None = None, pad_to: int | None = None) -> dict:
    """Pad the examples `indices` to the longest of them (or to `pad_to`) with `pad_id` (default: the
    tokenizer's, recorded in `data`)."""
    width = pad_to or max(data.lengths[i] for i in indices)
    ids = torch.full((len(indices), width), data.pad_id if pad_id is None else pad_id, dtype=torch.long)
    types = torch.zeros((len(indices), width), dtype=torch.long)
    mask = torch.zeros((len(indices), width), dtype=torch.long)
    for row, i in enumerate(indices):
        n = data.lengths[i]
        ids[row, :n] = torch.tensor(data.input_ids[i])
        types[row, :n] = torch.tensor(data.token_type_ids[i])
        mask[row, :n] = 1
    labels = torch.tensor([data.labels[i] for i in indices],
                          dtype=torch.float if data.regression else torch.long)
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask, "labels": labels}


def train_batches(data: Encoded, batch_size: int, seed: int, epoch: int, group_by_length: bool = True) -> list[list[int]]:
    """The batches (index lists) of one training epoch, a pure function of (seed, epoch) so a resumed
    run sees exactly the order the interrupted one would have seen.

    With `group_by_length`, shuffled examples are cut into chunks of 50 batches, each chunk sorted by length
    and cut into batches, and the batches shuffled: similar lengths share a batch, so less padding is computed,
    while every epoch still mixes the whole set."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(len(data), generator=g).tolist()
    if not group_by_length:
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    chunk = batch_size * 50
    batches = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start:start + chunk], key=lambda i: data.lengths[i])
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    perm = torch.randperm(len(batches), generator=g).tolist()
    return [batches[i] for i in perm]


def eval_batches(data: Encoded, batch_size: int) -> list[list[int]]:
    # Sorted by length so evaluation pads little; callers restore the original order.
    order = sorted(range(len(data)), key=lambda i: data.lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


@dataclass
class TaskData:
    """A run's tokenized data: what it trains on, the validation split it keeps its checkpoint by (None: it
    keeps it by dev), every dev split (reported), and the record of the rows drawn (metrics.json `data`)."""
    train: Encoded
    validation: Encoded | None
    evals: dict[str, Encoded]
    record: dict
    train_split: Split  # the drawn training examples as text (the task's own, also under a --train-file)


def load_task_data(task: Task, tokenizer, glue_dir: str | None, max_length: int = 128,
                   max_train_samples: int | None = None, max_eval_samples: int | None = None,
                   train_split: Split | None = None, validation_samples: int = 0, subset: str = "first",
                   data_seed: int = 0) -> TaskData:
    """Tokenized training subset, validation split and every dev split of `task`. A `train_split` (e.g. a
    --train-file) replaces the drawn training examples; the validation rows are drawn as without it."""
    train, validation, record = load_training_split(task, glue_dir, max_train_samples, validation_samples, subset,
                                                    data_seed)
    if train_split is not None:
        record = dict(record, train_file={"source": train_split.source, "n": len(train_split)})
    evals = {s: load_split(task, s, glue_dir, max_eval_samples) for s in task.eval_splits}
    enc = lambda split: encode(split, tokenizer, max_length, task.is_regression)  # noqa: E731
    return TaskData(enc(train_split or train), None if validation is None else enc(validation),
                    {s: enc(d) for s, d in evals.items()}, record, train)


def read_train_file(path: str, task: Task) -> Split:
    """Training inputs from a JSON Lines file (what `xtc augment` writes): one object per line with
    "text_a" (and "text_b" for pair tasks); "label" is optional because under KD the teacher labels them.
    The file replaces the task's training set, so augmented files carry the original examples too."""
    import json

    if not os.path.isfile(path):
        raise DataError(f"--train-file {path} does not exist; make one with `xtc augment`")
    texts, labels = [], []
    keys = ("text_a", "text_b") if task.is_pair else ("text_a",)
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}:{line_no}: not UTF-8 text ({exc.reason}); re-save the file as UTF-8") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                texts.append(tuple(str(obj[k]) for k in keys))
            except (json.JSONDecodeError, KeyError, TypeError, RecursionError) as exc:
                raise DataError(f"{path}:{line_no}: expected a JSON object with {list(keys)} "
                                f"({type(exc).__name__}: {exc})") from None
            labels.append(obj.get("label", 0.0 if task.is_regression else 0))
    if not texts:
        raise DataError(f"{path} holds no examples; it needs one JSON object per line (make one with `xtc augment`)")
    return Split(task.name, "train", texts, labels, source=path)
