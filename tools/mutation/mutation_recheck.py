"""Re-check the surviving mutants of one tools/mutation/mutation.sh group against the current tests (issue 14).

A full mutmut run takes up to hours; tests written after it only need to meet its survivors. For each mutant the
group's results list as survived, this activates it the way mutmut does (MUTANT_UNDER_TEST=<name>, inside the
group's mutants/ copy, with the current tests/ copied in) and runs the group's test files with -x: a test failure
(pytest exit 1) kills it. Only valid while the mutated module is unchanged since the run, which is checked.
Rewrites tools/mutation/results/mutation-<group>.results with "killed" for the mutants killed now.

    python tools/mutation/mutation_recheck.py pack
"""
from __future__ import annotations

import argparse
import configparser
import os
import re
import shutil
import subprocess
import sys

from mutation_score import read_equivalents  # tools/mutation/ is on sys.path when run as a script

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("group", help="a tools/mutation/mutation.sh group (its worktree is /tmp/xtc-mutation-<group>)")
    ap.add_argument("--worktree", help="default: /tmp/xtc-mutation-<group>")
    ap.add_argument("--mutmut-pkgs", default=os.environ.get("MUTMUT_PKGS", "/tmp/m3pkgs"))
    a = ap.parse_args(argv)
    wt = a.worktree or f"/tmp/xtc-mutation-{a.group}"
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(wt, "setup.cfg"))
    modules = cfg["mutmut"]["only_mutate"].split()
    tests = cfg["mutmut"]["pytest_add_cli_args_test_selection"].split()
    changed = subprocess.run(["git", "-C", ROOT, "diff", "--quiet", subprocess.check_output(
        ["git", "-C", wt, "rev-parse", "HEAD"], text=True).strip(), "HEAD", "--", *modules]).returncode
    if changed:
        print(f"xtc: error: {' '.join(modules)} changed since the {a.group} run; rerun tools/mutation/mutation.sh {a.group}",
              file=sys.stderr)
        return 2
    results = os.path.join(HERE, "results", f"mutation-{a.group}.results")
    lines = open(results, encoding="utf-8").read().splitlines()
    shutil.rmtree(os.path.join(wt, "mutants", "tests"))
    shutil.copytree(os.path.join(ROOT, "tests"), os.path.join(wt, "mutants", "tests"))
    # the other modules as they are now (the mutated one is unchanged, see above, and stays mutmut's copy)
    for folder, _, files in os.walk(os.path.join(ROOT, "xtc")):
        for f in files:
            src = os.path.join(folder, f)
            rel = os.path.relpath(src, ROOT)
            if f.endswith(".py") and rel not in modules:
                shutil.copyfile(src, os.path.join(wt, "mutants", rel))
    env = {**os.environ, "PYTHONPATH": f"{a.mutmut_pkgs}:.", "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    run = lambda mutant: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
         "--import-mode=importlib", *tests],
        cwd=os.path.join(wt, "mutants"), env={**env, "MUTANT_UNDER_TEST": mutant}, capture_output=True,
        text=True, timeout=900)
    base = run("")
    if base.returncode != 0:
        print(f"xtc: error: the tests fail without any mutant in {wt}/mutants:\n{base.stdout[-2000:]}", file=sys.stderr)
        return 2
    killed = 0
    out = []
    equivalent = read_equivalents()
    survivors = [ln for ln in lines if ln.strip().endswith(": survived")]
    for i, line in enumerate(lines):
        m = re.match(r"(\s*)(\S+): survived$", line)
        if m and m.group(2) not in equivalent:  # listed equivalents cannot be killed: not re-run
            rc = run(m.group(2)).returncode
            if rc == 1:
                killed += 1
                line = f"{m.group(1)}{m.group(2)}: killed"
            print(f"{m.group(2)}: {'killed' if rc == 1 else f'survived (pytest exit {rc})'}", flush=True)
        out.append(line)
    with open(results, "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")
    listed = sum(re.match(r"\s*(\S+): survived$", ln).group(1) in equivalent for ln in survivors)
    print(f"{a.group}: {killed} of {len(survivors) - listed} survivors killed by the current tests "
          f"({listed} more listed as equivalent, not re-run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
