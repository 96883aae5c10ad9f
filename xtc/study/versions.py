"""Provenance of the results (versions.json): package versions and the git commit."""
from __future__ import annotations

import os

from xtc.study.aggregate import read_json
from xtc.study.paths import METRICS_FILE


def write_versions(runs_dir: str, out_path: str) -> dict:
    """Provenance of the results: the package versions the runs recorded (each distinct set once), the
    versions at aggregation time, and the git commit of the checkout."""
    import glob
    import subprocess

    from xtc.files import write_json_atomic
    from xtc.run_folder import versions

    seen = []
    for path in sorted(glob.glob(os.path.join(runs_dir, "**", METRICS_FILE), recursive=True)):
        v = (read_json(path) or {}).get("versions")
        if v and v not in seen:
            seen.append(v)
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip() or None
    except OSError:
        commit = None
    try:
        import snakemake

        snakemake_version = snakemake.__version__
    except ImportError:
        snakemake_version = None
    out = {"runs_recorded": seen, "aggregated_with": {**versions(), "snakemake": snakemake_version},
           "git_commit": commit}
    write_json_atomic(out_path, out, "the versions record")
    return out
