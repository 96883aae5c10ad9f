"""Mutation score per module from tools/mutation/mutation.sh's results (issue 14) -> tools/mutation/results/mutation.json.

score = killed / (checked - equivalent), where equivalent mutants are those listed, with their reason, in
tools/mutation/results/mutation-equivalents.tsv (name<TAB>reason). A group run on a sample (MUT_SAMPLE) reports the
sample's counts and a 95% Wilson interval for the whole module's score."""
from __future__ import annotations

import argparse
import collections
import glob
import json
import math
import os
import re

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - half) / (1 + z * z / n)), min(1.0, (centre + half) / (1 + z * z / n))


def read_equivalents(results_dir: str = HERE) -> dict[str, str]:
    """mutation-equivalents.tsv: {mutant name: why it cannot change behaviour}."""
    path = os.path.join(results_dir, "mutation-equivalents.tsv")
    if not os.path.isfile(path):
        return {}
    rows = (line.rstrip("\n").split("\t", 1) for line in open(path, encoding="utf-8"))
    return {r[0]: r[1] for r in rows if len(r) == 2 and not r[0].startswith("#")}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--results", default=HERE, help="folder of mutation-<group>.results files")
    a = ap.parse_args(argv)
    equivalent = read_equivalents(a.results)
    modules = collections.defaultdict(collections.Counter)
    survivors = collections.defaultdict(list)
    status_of, group_of = {}, {}  # a mutant checked by two runs (e.g. two samples, MUT_TAG) counts once
    for path in sorted(glob.glob(os.path.join(a.results, "mutation-*.results"))):
        group = re.sub(r"^mutation-|\.results$", "", os.path.basename(path))
        for line in open(path, encoding="utf-8"):
            m = re.match(r"\s*(\S+?): (.+)$", line)
            if m and m.group(2) != "not checked" and status_of.get(m.group(1)) != "killed":
                status_of[m.group(1)], group_of[m.group(1)] = m.group(2), group
    for name, status in sorted(status_of.items()):
        module = re.match(r"(xtc(?:\.study)?\.[a-z_]+)\.", name).group(1)
        if status == "survived" and name in equivalent:
            status = "equivalent"
        modules[module][status] += 1
        modules[module]["checked"] += 1
        if status in ("survived", "no tests", "timeout", "suspicious"):
            survivors[module].append(f"{name}: {status}")
        if os.path.isfile(os.path.join(a.results, f"mutation-{group_of[name]}.sample")):
            modules[module]["sampled"] = 1
    out = {"tool": "mutmut 3.8.1", "modules": {}, "total": {}}
    tk = tn = 0
    for module, c in sorted(modules.items()):
        n = c["checked"] - c["equivalent"]
        k = c["killed"]
        lo, hi = wilson(k, n)
        out["modules"][module] = {"checked": c["checked"], "killed": k, "survived": c["survived"],
                                  "no_tests": c["no tests"], "timeout": c["timeout"],
                                  "equivalent": c["equivalent"], "score": k / n if n else float("nan"),
                                  "sample": bool(c["sampled"]), "score_ci95": [lo, hi] if c["sampled"] else None,
                                  "survivors": survivors[module]}
        tk, tn = tk + k, tn + n
    out["total"] = {"killed": tk, "scored": tn, "score": tk / tn if tn else float("nan")}
    with open(os.path.join(a.results, "mutation.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)
    for module, r in out["modules"].items():
        ci = f" (sample; 95% CI {r['score_ci95'][0]:.1%}-{r['score_ci95'][1]:.1%})" if r["sample"] else ""
        print(f"{module}: {r['killed']}/{r['checked'] - r['equivalent']} killed = {r['score']:.1%}{ci}; "
              f"survived {r['survived']}, no tests {r['no_tests']}, timeout {r['timeout']}, "
              f"equivalent {r['equivalent']}")
    print(f"total: {tk}/{tn} = {out['total']['score']:.1%}")
    return out


if __name__ == "__main__":
    main()
