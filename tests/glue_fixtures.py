"""Synthetic GLUE files in the download_glue_data.py layout (never real GLUE text)."""
from __future__ import annotations

import os
import random

POS = ["good", "great", "fun", "funny", "happy"]
NEG = ["bad", "awful", "boring", "sad"]
FILL = ["the", "movie", "film", "plot", "actor", "is", "was", "very", "really", "quite", "it", "this"]


def _sentence(rng: random.Random, label: int) -> str:
    words = rng.sample(FILL, 4) + [rng.choice(POS if label else NEG)]
    rng.shuffle(words)
    return " ".join(words)


def write_glue(root: str, n_train: int = 64, n_dev: int = 32, seed: int = 0) -> str:
    """Write SST-2, CoLA (header-less), MRPC (BOM header), STS-B and RTE with a learnable signal."""
    rng = random.Random(seed)

    def rows(n):
        return [(rng.randint(0, 1),) for _ in range(n)]

    for split, n in (("train", n_train), ("dev", n_dev)):
        labs = [r[0] for r in rows(n)]
        os.makedirs(f"{root}/SST-2", exist_ok=True)
        with open(f"{root}/SST-2/{split}.tsv", "w") as f:
            f.write("sentence\tlabel\n" + "".join(f"{_sentence(rng, y)} \t{y}\n" for y in labs))
        os.makedirs(f"{root}/CoLA", exist_ok=True)
        with open(f"{root}/CoLA/{split}.tsv", "w") as f:
            f.write("".join(f"gj04\t{y}\t\t{_sentence(rng, y)}\n" for y in labs))
        os.makedirs(f"{root}/MRPC", exist_ok=True)
        with open(f"{root}/MRPC/{split}.tsv", "w", encoding="utf-8-sig") as f:
            f.write("Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n")
            f.write("".join(f"{y}\t{i}\t{i + 1}\t\"{_sentence(rng, y)}\t{_sentence(rng, y)}\n"
                            for i, y in enumerate(labs)))
        os.makedirs(f"{root}/STS-B", exist_ok=True)
        with open(f"{root}/STS-B/{split}.tsv", "w") as f:
            f.write("index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n")
            f.write("".join(f"{i}\tmain\tf\t2012\t{i}\tnone\tnone\t{_sentence(rng, y)}\t{_sentence(rng, y)}\t"
                            f"{4.0 * y + rng.random():.3f}\n" for i, y in enumerate(labs)))
        os.makedirs(f"{root}/RTE", exist_ok=True)
        with open(f"{root}/RTE/{split}.tsv", "w") as f:
            f.write("index\tsentence1\tsentence2\tlabel\n")
            f.write("".join(f"{i}\t{_sentence(rng, y)}\t{_sentence(rng, y)}\t"
                            f"{'entailment' if y else 'not_entailment'}\n" for i, y in enumerate(labs)))
    return root
