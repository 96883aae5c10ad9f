"""What the training subsets hold: per-stratum counts (label; STS-B genre|score bin) of the rows a run trains
and selects on, stratified (`--subset stratified`, after 500 validation rows) against the old first rows, beside
the whole training split. Reads the local GLUE copy; writes bench/results/subset_counts.json.

    XTC_GLUE_DIR=/work/shared/glue .venv/bin/python bench/subset_counts.py
"""
from __future__ import annotations

import json
import os
import sys
from collections import Counter

from xtc.data import load_split, row_strata, select_training_rows
from xtc.tasks import get_task

CASES = [("stsb", 1024), ("stsb", None), ("sst2", 16384), ("mrpc", 1024)]  # None: all rows left after validation
VALIDATION, SEED = 500, 0


def counts(strata, rows) -> dict:
    return dict(sorted(Counter(strata[i] for i in rows).items()))


def genre_counts(full, rows) -> dict | None:
    return None if full.genres is None else dict(sorted(Counter(full.genres[i] for i in rows).items()))


def main(out: str = os.path.join(os.path.dirname(__file__), "results", "subset_counts.json")) -> dict:
    glue = os.environ.get("XTC_GLUE_DIR", "/work/shared/glue")
    result = {"glue_dir": glue, "validation_samples": VALIDATION, "data_seed": SEED, "cases": []}
    for name, n in CASES:
        task = get_task(name)
        full = load_split(task, "train", glue)
        strata = row_strata(task, full)
        every = list(range(len(full)))
        sel = select_training_rows(task, full, n, VALIDATION, "stratified", SEED)
        first = select_training_rows(task, full, n, 0, "first", SEED)  # the old behaviour: first rows, no validation
        case = {"task": name, "max_train_samples": n, "full": {"n": len(full), "strata": counts(strata, every),
                                                                "genres": genre_counts(full, every)},
                "stratified": {"n": len(sel.train), "sha256": sel.record["train"]["sha256"],
                               "strata": counts(strata, sel.train), "genres": genre_counts(full, sel.train)},
                "validation": {"n": len(sel.validation), "strata": counts(strata, sel.validation),
                               "genres": genre_counts(full, sel.validation)},
                "first": {"n": len(first.train), "strata": counts(strata, first.train),
                          "genres": genre_counts(full, first.train)}}
        result["cases"].append(case)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    res = main(*sys.argv[1:])
    for c in res["cases"]:
        print(c["task"], c["max_train_samples"] or "all-but-validation")
        for k in ("full", "first", "stratified", "validation"):
            print(f"  {k:10s} n={c[k]['n']:6d} genres={c[k]['genres']} strata={c[k]['strata']}")
