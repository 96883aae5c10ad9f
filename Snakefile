"""xtc-bench: the XTC study (arXiv 2206.01859) as a Snakemake workflow.

    snakemake --cores 2                                           # `quick` profile (the default below)
    snakemake --cores 2 --configfile workflow/config/smoke.yaml   # seconds per run, scratch/smoke/
    snakemake --cores 2 --config allow_incomplete=true            # aggregate what finished, mark the rest
    snakemake --workflow-profile workflow/profiles/slurm --configfile workflow/config/paper.yaml
    snakemake --report report.html                                # after a run: figures, tables, claims, reproduction

Rules are thin shells over `xtc` commands (workflow/rules/*.smk); the grid, aggregation, tables, claims
and figures live in xtc/study/ (one module each). The config is validated once (common.smk) against
workflow/schemas/config.schema.yaml. A profile given with --configfile is the whole config (every profile
sets every required key); the quick profile is read only when no --configfile is given.
"""
import sys

from snakemake.utils import min_version

min_version("9.0")

sys.path.insert(0, workflow.basedir)  # the xtc package of this checkout, installed or not


if not workflow.config_settings.configfiles:

    configfile: "workflow/config/quick.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/teacher.smk"
include: "workflow/rules/students.smk"
include: "workflow/rules/augment.smk"
include: "workflow/rules/export.smk"
include: "workflow/rules/aggregate.smk"


localrules:
    all,
    study_config,
    aggregate,
    tables,
    claims,
    curves,
    figures,


rule all:
    """The whole study: every run (a lost one is trained again), results, tables, claims, figures and, where
    the config names a committed reference (paths.reference), the reproduction table."""
    default_target: True
    input:
        study_outputs,
        rules.aggregate.output,
        rules.tables.output,
        rules.claims.output,
        rules.curves.output,
        rules.figures.output,
        rules.diagnostics.output,
        REPRODUCTION,
