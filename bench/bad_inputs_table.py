"""The bad-input table of issue 14: run the bad-input cases of tests/test_cli.py recording each one, then write
bench/results/bad_inputs.md (case, command, exit status, message) and the totals.

    python bench/bad_inputs_table.py
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLE_TESTS = ["tests/test_cli.py::test_bad_input_is_one_clear_line_exit_2_and_leaves_nothing",
               "tests/test_cli.py::test_table_covers_every_kind_and_is_large_enough"]


def main() -> int:
    with tempfile.TemporaryDirectory() as d:
        rec = os.path.join(d, "cases.jsonl")
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TABLE_TESTS],
                              cwd=ROOT, env={**os.environ, "XTC_BAD_INPUT_TABLE": rec}, capture_output=True, text=True)
        rows = [json.loads(line) for line in open(rec, encoding="utf-8")]
    summary = proc.stdout.strip().splitlines()[-1]
    tracebacks = sum("Traceback" in r["stderr"] for r in rows)
    not_one_line = sum(len(r["stderr"].splitlines()) != 1 for r in rows)
    accepted = sum(r["exit"] == 0 for r in rows)
    other_exit = sum(r["exit"] not in (0, 2) for r in rows)
    cell = lambda t: t.replace("|", "\\|").replace("\n", " / ")  # noqa: E731
    lines = ["# Bad inputs (issue 14)", "",
             f"`python bench/bad_inputs_table.py` ({len(rows)} cases in tests/test_cli.py; pytest: {summary}).",
             "Each case also checks that the folder it ran in is unchanged afterwards (no output, state or temp file).",
             "", f"Totals: exit 2 {sum(r['exit'] == 2 for r in rows)}, other exit {other_exit}, "
             f"silent accepts (exit 0) {accepted}, tracebacks {tracebacks}, messages not one line {not_one_line}.", "",
             "| case | command | exit | message |", "|---|---|---|---|"]
    lines += [f"| {cell(r['case'])} | `{cell(r['command'])}` | {r['exit']} | {cell(r['stderr'])} |" for r in rows]
    out = os.path.join(ROOT, "bench", "results", "bad_inputs.md")
    with open(out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(f"{out}: {len(rows)} cases; {summary}")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
