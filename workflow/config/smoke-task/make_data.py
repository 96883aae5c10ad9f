"""Writes the smoke study's own three-class task (synthetic text, string labels, other column names):
python workflow/config/smoke-task/make_data.py (the committed train.csv/dev.csv are its output)."""
import csv
import os
import random

POS, NEG = ["good", "great", "fun", "happy"], ["bad", "awful", "boring", "sad"]
FILL = ["the", "movie", "film", "plot", "actor", "is", "was", "very", "really", "quite", "it", "this"]
LABELS = ["praise", "complaint", "mixed"]


def sentence(rng, words):
    out = rng.sample(FILL, 4) + [rng.choice(words)]
    rng.shuffle(out)
    return " ".join(out)


rng = random.Random(0)
here = os.path.dirname(os.path.abspath(__file__))
for split, n in (("train", 64), ("dev", 32)):
    with open(os.path.join(here, f"{split}.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["review_id", "first_half", "second_half", "verdict"])
        for i in range(n):
            y = rng.randint(0, 2)
            a, b = {0: (POS, POS), 1: (NEG, NEG), 2: (POS, NEG)}[y]
            w.writerow([i, sentence(rng, a), sentence(rng, b), LABELS[y]])
