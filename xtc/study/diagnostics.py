"""Why a student stalls, across the study: the run diagnostics (xtc/diagnostics.py, `history[i]["diagnostics"]`
in every metrics.json) as a tidy diagnostics.csv, a Markdown table and one figure.

diagnostics.csv has one row per (run, evaluation, quantized role), or one row with an empty role for a run
without quantized weights (teacher, fp32 students): the share of weight codes changed since the start of the run
(`changed_share`: sign flips at 1 bit), the selection metric on the fixed training sample and on dev and their
`gap`, the share of dev predictions in the most predicted class (`top_class_share`: 1.0 is a constant
classifier), and the KD terms' shares of the encoder gradient norm at the first step (the same on every row of
a run; empty without KD).
"""
from __future__ import annotations

import json
import math
import os

from xtc.files import make_dirs, write_csv_atomic, write_text_atomic
from xtc.study.grid import study_runs
from xtc.study.paths import METRICS_FILE, run_dir
from xtc.study.views import task_title

RUN_COLUMNS = ["run_id", "config_id", "kind", "task", "depth", "wbits", "abits", "kd", "epochs", "budget", "lr",
               "da", "init", "seed"]
KD_TERMS = ("logit", "hidden", "attention")
DIAGNOSTICS_COLUMNS = [*RUN_COLUMNS, "stage", "step", "epoch", "role", "changed_share", "selection_metric",
                       "train_score", "dev_score", "gap", "top_class_share",
                       *(f"kd_{t}_share" for t in KD_TERMS)]
LINEAR_ROLES = ("query", "key", "value", "attn_out", "ffn_in", "ffn_out")


def _top_share(counts: dict) -> float:
    """Share of the most predicted class over every dev split; NaN for regression (no counts)."""
    per_class: dict[str, int] = {}
    for split in (counts or {}).values():
        for name, n in split.items():
            per_class[name] = per_class.get(name, 0) + int(n)
    total = sum(per_class.values())
    return max(per_class.values()) / total if total else float("nan")


def collect_diagnostics(config: dict, runs_dir: str):
    """Every planned run's diagnostics as DIAGNOSTICS_COLUMNS (runs without a readable metrics.json, or
    recorded before the diagnostics existed, have no rows)."""
    import pandas as pd

    rows = []
    for r in study_runs(config).to_dict("records"):
        try:
            with open(os.path.join(run_dir(runs_dir, r["run_id"]), METRICS_FILE)) as f:
                rec = json.load(f)
        except (OSError, ValueError):
            continue
        sel = rec.get("selection_metric")
        history = [h for h in rec.get("history") or [] if isinstance(h.get("diagnostics"), dict)]
        kd = next((h["diagnostics"]["kd_gradient"] for h in history if "kd_gradient" in h["diagnostics"]), None)
        kd_shares = {f"kd_{t}_share": float((kd or {}).get("shares", {}).get(t, float("nan"))) for t in KD_TERMS}
        base = {k: r[k] for k in RUN_COLUMNS}
        for h in history:
            d = h["diagnostics"]
            dev = (h.get("metrics") or {}).get(sel, float("nan"))
            train = (d.get("train_metrics") or {}).get(sel, float("nan"))
            common = {**base, "stage": h.get("stage", ""), "step": int(h["step"]),
                      "epoch": float(h.get("epoch", float("nan"))), "selection_metric": sel,
                      "train_score": float(train), "dev_score": float(dev),
                      "gap": float(d.get("gap", float("nan"))),
                      "top_class_share": _top_share(d.get("predicted_counts")), **kd_shares}
            shares = d.get("changed_codes") or {}
            for role, share in shares.items():
                rows.append({**common, "role": role, "changed_share": float(share)})
            if not shares:
                rows.append({**common, "role": "", "changed_share": float("nan")})
    return pd.DataFrame(rows, columns=DIAGNOSTICS_COLUMNS)


def _fmt(x, nd=3) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def diagnostics_table(diag) -> str:
    """Markdown: per task and student setting (mean over seeds), at the last evaluation: the sign-flip/code-change
    share of the encoder's Linear weights (mean over their six roles) and of the word embeddings, the train and
    dev scores and their gap, the top-class share of dev predictions, and the KD gradient shares at step 0."""
    head = ("| task | layers | W bits | KD | epochs | lr | DA | seeds | steps | changed codes, encoder | changed "
            "codes, word emb. | train | dev | gap | top-class share | KD grad share logit / hidden / attention |")
    lines = ["# Diagnostics at the last evaluation (mean over seeds)", "",
             "Changed codes: share of weight codes (signs at 1 bit) that differ from the run's start, mean over "
             "the six encoder roles (q, k, v, attention-out, FFN-in, FFN-out). Train: the selection metric on a "
             "fixed sample of training examples; gap = train - dev. Top-class share: dev predictions in the most "
             "predicted class (1.000: a constant classifier). KD grad share: each KD term's share of the summed "
             "gradient norms on the encoder at the first step.", "", head,
             "|" + "---|" * (head.count("|") - 1)]
    if diag is None or not len(diag):
        return "\n".join(lines + ["", "No run recorded diagnostics."]) + "\n"
    last = diag[diag.groupby("run_id")["step"].transform("max") == diag["step"]]
    keys = ["task", "depth", "wbits", "kd", "epochs", "lr", "da"]
    for key, g in last.groupby(keys, sort=True, dropna=False):
        per_run = g.groupby("run_id")
        enc = per_run.apply(lambda x: x[x["role"].isin(LINEAR_ROLES)]["changed_share"].mean(),
                            include_groups=False)
        emb = per_run.apply(lambda x: x[x["role"] == "word_embeddings"]["changed_share"].mean(),
                            include_groups=False)
        first = per_run.first()
        task, depth, wbits, kd, epochs, lr, da = key
        kdtxt = " / ".join(_fmt(first[f"kd_{t}_share"].mean(), 2) for t in KD_TERMS)
        lines.append(f"| {task_title(task)} | {depth} | {wbits} | {kd} | {epochs:g} | {lr:g} | {da} | "
                     f"{per_run.ngroups} | {int(first['step'].mean())} | {_fmt(enc.mean())} | {_fmt(emb.mean())} | "
                     f"{_fmt(first['train_score'].mean())} | {_fmt(first['dev_score'].mean())} | "
                     f"{_fmt(first['gap'].mean())} | {_fmt(first['top_class_share'].mean())} | {kdtxt} |")
    return "\n".join(lines) + "\n"


def write_diagnostics(config: dict, runs_dir: str, out_csv: str, out_md: str):
    """diagnostics.csv and its Markdown table; returns the frame (figures.fig_flip_share draws it)."""
    diag = collect_diagnostics(config, runs_dir)
    for path in (out_csv, out_md):
        make_dirs(os.path.dirname(os.path.abspath(path)), "the output folder")
    write_csv_atomic(out_csv, diag, "the diagnostics table")
    write_text_atomic(out_md, diagnostics_table(diag), "the diagnostics table")
    return diag
