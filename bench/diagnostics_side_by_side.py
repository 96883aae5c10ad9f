"""The run diagnostics of several students side by side (any task), as a Markdown table: e.g. a stalled and a
learning 1-bit student. Each argument is NAME=RUN_FOLDER (finished, or unfinished: read from its resume state).

    python bench/diagnostics_side_by_side.py \\
        "W1A8 1k/192 steps=/work/runs-shared/mrpc/side/W1A8-1k-192" \\
        "W2A8 1k/192 steps=/work/runs-shared/mrpc/side/W2A8-1k-192" \\
        "W1A8 recipe=/work/runs-shared/mrpc/recipe-6L-W1A8"
"""
from __future__ import annotations

import argparse

from onebit_recipe import read_history

ENCODER = ("query", "key", "value", "attn_out", "ffn_in", "ffn_out")


def rows(name: str, path: str) -> list[str]:
    hist, _, finished = read_history(path)
    kd = next((h["diagnostics"]["kd_gradient"]["shares"] for h in hist if "kd_gradient" in h.get("diagnostics", {})),
              {})
    kd_text = "/".join(f"{kd.get(t, float('nan')):.2f}" for t in ("logit", "hidden", "attention"))
    out = []
    for i, h in enumerate(hist):
        d = h["diagnostics"]
        counts = "/".join(str(n) for n in d["predicted_counts"]["dev"].values())
        flips = d["changed_codes"]
        enc = sum(flips[r] for r in ENCODER) / len(ENCODER)
        label = (name + ("" if finished else " (unfinished)")) if i == 0 else ""
        dev = ", ".join(f"{k} {v:.3f}" for k, v in h["metrics"].items())
        train = ", ".join(f"{k} {v:.3f}" for k, v in d["train_metrics"].items())
        out.append(f"| {label} | {h['step']} | {dev} | {counts} | {train} | {d['gap']:+.3f} | {100 * enc:.2f}% | "
                   f"{100 * flips['word_embeddings']:.2f}% | {h['train'].get('logit', float('nan')):.3f} | "
                   f"{kd_text if i == 0 else ''} |")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", metavar="NAME=RUN_FOLDER")
    print("| run | step | dev metrics | predicted per class | train-sample metrics | gap (selection metric) | flips "
          "encoder (mean of 6 roles) | flips word emb. | train logit term | KD grad share logit/hidden/attention "
          "(step 0) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for arg in p.parse_args().runs:
        name, _, path = arg.rpartition("=")
        print("\n".join(rows(name, path)))


if __name__ == "__main__":
    main()
