"""The longest functions and the biggest modules of a package, in lines (from the AST: a function's first to
last line, docstring and comments included). The figures issue 26 tracks.

    python tools/code_size.py xtc        # the five longest of each
    python tools/code_size.py xtc 10
"""
from __future__ import annotations

import ast
import os
import sys


def sizes(root: str) -> tuple[list, list]:
    """([(lines, "path:line name")] of every function, [(lines, path)] of every module) under `root`."""
    funcs, mods = [], []
    for folder, _, files in os.walk(root):
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            with open(path) as f:
                src = f.read()
            mods.append((len(src.splitlines()), path))
            for node in ast.walk(ast.parse(src)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    funcs.append((node.end_lineno - node.lineno + 1, f"{path}:{node.lineno} {node.name}"))
    return funcs, mods


def main(argv: list[str]) -> int:
    if not argv or not os.path.isdir(argv[0]):
        print("usage: python tools/code_size.py PACKAGE_FOLDER [HOW_MANY]", file=sys.stderr)
        return 2
    funcs, mods = sizes(argv[0])
    most = int(argv[1]) if len(argv) > 1 else 5
    for title, rows in (("longest functions", funcs), ("biggest modules", mods)):
        print(f"## {title}")
        for n, name in sorted(rows, reverse=True)[:most]:
            print(n, name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
