"""Sign-flip shares of finished students, and the one-bit map table of a study (post hoc, from the run folders).

A 1-bit weight is a * sign(W): the only thing training can change in it, besides the scale, is the sign of a
latent weight. The share of signs of each quantized matrix that differ between a student's kept checkpoint and
its initialisation (the teacher's weight of the same name: full-depth students start from the teacher) says how
far the student moved. Word-embedding rows of tokens never seen in training get no gradient, so the embedding
table is reported apart. Files are read with safetensors (never unpickled).

    python bench/sign_flips.py --runs runs/onebit-map --results results/onebit-map

writes, into --results: sign_flips.csv (one row per student and quantized role) and, with the study's
history.csv and runs.csv there, map.csv / map.md: per student its setting, steps, wall time, dev score (best
and at each evaluation), the 2-bit student at the same setting, the majority/constant baseline, and its
sign-flip share. The students must start from the teacher (init~teacher; layer-reduced ones map their layers).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re

import numpy as np
from safetensors import safe_open

from xtc import arch

# the quantized roles, named by the package's architecture map (xtc.arch); the word embeddings as "word_emb"
ROLES = ("query", "key", "value", "attn_out", "ffn_in", "ffn_out", "word_emb")
LINEAR_ROLES = [r for r in ROLES if r != "word_emb"]
# majority-class dev accuracy (SST-2 444/872, MRPC 279/408); a constant prediction has no Pearson (0 here)
BASELINE = {"sst2": ("majority acc", 0.5092), "mrpc": ("majority acc", 0.6838), "stsb": ("constant Pearson", 0.0)}


def role_of(name: str) -> str | None:
    """The quantized role of a weight tensor's name (BERT, RoBERTa, ELECTRA, DistilBERT, ... alike)."""
    if not name.endswith(".weight"):
        return None
    role = arch.role_of(name[: -len(".weight")])
    return "word_emb" if role == "word_embeddings" else role


def teacher_name(name: str, layer_map: list[int]) -> str:
    """The teacher's tensor a student tensor was copied from (student layer i = teacher layer layer_map[i])."""
    m = re.search(r"layer\.(\d+)\.", name)
    return name if not m else name.replace(m.group(0), f"layer.{layer_map[int(m.group(1))]}.", 1)


def flips(run_dir: str) -> list[dict]:
    """Per quantized role: tensors, weights, and the share of weight signs that differ from the teacher's."""
    with open(os.path.join(run_dir, "metrics.json"), encoding="utf-8") as f:
        rec = json.load(f)
    teacher = rec["config"]["teacher"]
    if rec["config"].get("init"):
        raise SystemExit(f"{run_dir}: starts from {rec['config']['init']}, not the teacher; compare with that run")
    lmap = rec["layers"]["teacher_layers"] or list(range(rec["layers"]["student"]))  # None: no layer reduction
    counts: dict[str, list[int]] = {}
    with safe_open(os.path.join(run_dir, "model.safetensors"), "pt") as s, \
            safe_open(os.path.join(teacher, "model.safetensors"), "pt") as t:
        tnames = set(t.keys())
        for name in s.keys():
            role = role_of(name)
            if role is None:
                continue
            tname = teacher_name(name, lmap)
            if tname not in tnames:  # saved with or without the model's prefix
                tname = next(k for k in tnames if k.endswith(tname.split(".", 1)[1]) or k.endswith(tname))
            ws, wt = s.get_tensor(name).float().numpy(), t.get_tensor(tname).float().numpy()
            changed = np.signbit(ws) != np.signbit(wt)
            c = counts.setdefault(role, [0, 0, 0])
            c[0] += 1
            c[1] += changed.size
            c[2] += int(changed.sum())
    rows = [{"role": r, "tensors": c[0], "weights": c[1], "flipped": c[2], "share": c[2] / c[1]}
            for r, c in counts.items()]
    lin = [counts[r] for r in LINEAR_ROLES if r in counts]
    rows.append({"role": "linear", "tensors": sum(c[0] for c in lin), "weights": sum(c[1] for c in lin),
                 "flipped": sum(c[2] for c in lin), "share": sum(c[2] for c in lin) / sum(c[1] for c in lin)})
    return rows


def student_dirs(runs: str) -> list[str]:
    return sorted(os.path.dirname(p) for p in glob.glob(os.path.join(runs, "student", "**", "metrics.json"),
                                                         recursive=True))


def map_table(results: str, flips_df, runs_dir: str):
    """The map: one row per student (see the module docstring)."""
    import pandas as pd

    from xtc.study import parse_run_relpath

    hist = pd.read_csv(os.path.join(results, "history.csv"))
    hist = hist[hist["metric"] == "score"]
    import yaml

    with open(os.path.join(results, "study-config.yaml"), encoding="utf-8") as f:
        cfg = yaml.safe_load(f)
    rows = []
    for rid, g in hist.groupby("run_id"):
        if not rid.startswith("student/"):
            continue
        s = parse_run_relpath(rid)
        with open(os.path.join(runs_dir, rid, "metrics.json"), encoding="utf-8") as f:
            rec = json.load(f)
        n_train = rec["config"]["train_size"]
        g = g.sort_values("step")
        curve = " ".join(f"{int(st)}:{100 * v:.1f}" for st, v in zip(g["step"], g["value"]))
        fl = flips_df[(flips_df["run_id"] == rid) & (flips_df["role"] == "linear")]
        emb = flips_df[(flips_df["run_id"] == rid) & (flips_df["role"] == "word_emb")]
        aug = cfg["augment"]
        rows.append({"task": s["task"], "wbits": s["wbits"], "lr": s["lr"], "da": s["da"],  # examples as trained on
                     "examples": n_train if s["da"] == "off" else f"{aug['max_train_samples']} x (1+{aug['copies']})",
                     "train_size": n_train, "steps": rec["steps"],
                     "wall_s": round(rec["wall_seconds"], 1), "best_step": rec["best_step"],
                     "dev_best": round(100 * max(g["value"]), 1), "dev_last": round(100 * g["value"].iloc[-1], 1),
                     "baseline": 100 * BASELINE[s["task"]][1], "baseline_kind": BASELINE[s["task"]][0],
                     "flip_linear_pct": round(100 * fl["share"].iloc[0], 2) if len(fl) else float("nan"),
                     "flip_word_emb_pct": round(100 * emb["share"].iloc[0], 2) if len(emb) else float("nan"),
                     "curve": curve, "run_id": rid})
    df = pd.DataFrame(rows)
    key = ["task", "lr", "da", "examples"]
    two = df[df["wbits"] == 2].set_index(key)["dev_best"]
    df["dev_2bit"] = [two.get(tuple(r[k] for k in key), float("nan")) for r in df.to_dict("records")]
    df["gap_to_2bit"] = (df["dev_best"] - df["dev_2bit"]).round(1)
    return df.sort_values(["task", "wbits", "da", "lr", "train_size"]).reset_index(drop=True)


def main() -> None:
    import pandas as pd

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", required=True, help="the study's runs folder (runs/<profile>)")
    p.add_argument("--results", required=True, help="where to write sign_flips.csv (and map.csv/map.md)")
    a = p.parse_args()
    rows = []
    for d in student_dirs(a.runs):
        rid = os.path.relpath(d, a.runs)
        for r in flips(d):
            rows.append({"run_id": rid, **r})
    os.makedirs(a.results, exist_ok=True)
    fl = pd.DataFrame(rows)
    fl.to_csv(os.path.join(a.results, "sign_flips.csv"), index=False)
    print(f"wrote {os.path.join(a.results, 'sign_flips.csv')} ({len(fl)} rows)")
    if os.path.exists(os.path.join(a.results, "history.csv")):
        m = map_table(a.results, fl, a.runs)
        m.to_csv(os.path.join(a.results, "map.csv"), index=False)
        cols = ["task", "wbits", "lr", "da", "examples", "steps", "wall_s", "dev_best", "dev_2bit", "gap_to_2bit",
                "baseline", "flip_linear_pct", "flip_word_emb_pct", "curve"]
        with open(os.path.join(a.results, "map.md"), "w", encoding="utf-8") as f:
            f.write("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n")
            for r in m[cols].to_dict("records"):
                f.write("| " + " | ".join(str(r[c]) for c in cols) + " |\n")
        print(f"wrote map.csv and map.md ({len(m)} students)")


if __name__ == "__main__":
    main()
