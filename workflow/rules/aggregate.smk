# Aggregation and report: the effective config, runs.csv/summary.csv/missing.csv/history.csv, one table per
# axis, the claims tests, the figures (learning curves included) and, where the config names a committed
# reference (paths.reference), the reproduction table. `xtc study all` does the same on a partial tree,
# outside Snakemake.


rule study_config:
    """The validated config with its defaults, as the study commands read it (also provenance)."""
    output:
        f"{RESULTS}/study-config.yaml",
    log:
        f"{RUNS}/logs/study_config.log",
    benchmark:
        f"{RUNS}/benchmarks/study_config.tsv"
    params:
        text=study.dump_config(config),
    threads: 1
    conda:
        "../envs/xtc.yaml"
    shell:
        "printf '%s\\n' {params.text:q} > {output:q} 2> {log:q}"


rule aggregate:
    """Tidy runs.csv (one row per run and metric), summary.csv over seeds, missing.csv (empty unless the
    config allows an incomplete study), history.csv (every evaluation of every run, for the learning curves)."""
    input:
        config=rules.study_config.output[0],
        runs=study_outputs,
    output:
        runs=f"{RESULTS}/runs.csv",
        summary=report(f"{RESULTS}/summary.csv", caption="../report/summary.rst", category="Results"),
        missing=f"{RESULTS}/missing.csv",
        history=f"{RESULTS}/history.csv",
        versions=f"{RESULTS}/versions.json",
    log:
        f"{RUNS}/logs/aggregate.log",
    benchmark:
        f"{RUNS}/benchmarks/aggregate.tsv"
    params:
        # the folder of the per-run outputs (the inputs); a function, since a profile may put its results inside
        # it (quick: runs/quick/results) and the linter reads such a plain string as a hardcoded output prefix
        runs_dir=lambda wildcards: RUNS,
        out_dir=lambda wildcards, output: os.path.dirname(output.runs),
        allow_incomplete="--allow-incomplete" if ALLOW_INCOMPLETE else "",
    threads: res("aggregate", "threads", 1)
    resources:
        mem_mb=res("aggregate", "mem_mb", 2000),
        runtime=res("aggregate", "runtime", 10),
    conda:
        "../envs/xtc.yaml"
    shell:
        "xtc study aggregate --config {input.config:q} --runs-dir {params.runs_dir:q} --out-dir {params.out_dir:q} "
        "{params.allow_incomplete} > {log:q} 2>&1"


rule tables:
    """One paper-style Markdown table per study axis."""
    input:
        config=rules.study_config.output[0],
        runs=rules.aggregate.output.runs,
        missing=rules.aggregate.output.missing,
    output:
        [report(f"{RESULTS}/tables/{axis}.md", caption="../report/tables.rst", category="Tables",
                labels={"axis": axis}) for axis in AXES],
    log:
        f"{RUNS}/logs/tables.log",
    benchmark:
        f"{RUNS}/benchmarks/tables.tsv"
    params:
        results=lambda wildcards, input: os.path.dirname(input.runs),
        out_dir=lambda wildcards, output: os.path.dirname(output[0]),
    threads: res("aggregate", "threads", 1)
    resources:
        mem_mb=res("aggregate", "mem_mb", 2000),
        runtime=res("aggregate", "runtime", 10),
    conda:
        "../envs/xtc.yaml"
    shell:
        "xtc study tables --config {input.config:q} --results-dir {params.results:q} "
        "--out-dir {params.out_dir:q} > {log:q} 2>&1"


rule claims:
    """The recipe's five findings as statistical tests: one row per test with its effect, 95% CI, decision rule
    and verdict (holds / does not hold / inconclusive), and the numbers behind it."""
    input:
        config=rules.study_config.output[0],
        runs=rules.aggregate.output.runs,
        missing=rules.aggregate.output.missing,
    output:
        report(f"{RESULTS}/claims.csv", caption="../report/claims.rst", category="Claims"),
    log:
        f"{RUNS}/logs/claims.log",
    benchmark:
        f"{RUNS}/benchmarks/claims.tsv"
    params:
        results=lambda wildcards, input: os.path.dirname(input.runs),
    threads: res("aggregate", "threads", 1)
    resources:
        mem_mb=res("aggregate", "mem_mb", 2000),
        runtime=res("aggregate", "runtime", 10),
    conda:
        "../envs/xtc.yaml"
    shell:
        "xtc study claims --config {input.config:q} --results-dir {params.results:q} --out {output:q} > {log:q} 2>&1"


rule figures:
    """Score vs budget, learning rate, KD mode, depth and model size, and the learning curves per bit-width
    (PNG and PDF, byte-identical for the same results)."""
    input:
        config=rules.study_config.output[0],
        runs=rules.aggregate.output.runs,
        history=rules.aggregate.output.history,
    output:
        [report(f"{FIGURES}/{name}.png", caption=figure_caption(name), category="Figures",
                labels={"figure": name}) for name in FIGURE_NAMES],
        [f"{FIGURES}/{name}.pdf" for name in FIGURE_NAMES],
    log:
        f"{RUNS}/logs/figures.log",
    benchmark:
        f"{RUNS}/benchmarks/figures.tsv"
    params:
        results=lambda wildcards, input: os.path.dirname(input.runs),
        out_dir=lambda wildcards, output: os.path.dirname(output[0]),
    threads: res("aggregate", "threads", 1)
    resources:
        mem_mb=res("aggregate", "mem_mb", 2000),
        runtime=res("aggregate", "runtime", 10),
    conda:
        "../envs/xtc.yaml"
    shell:
        "MPLBACKEND=Agg xtc study figures --config {input.config:q} --results-dir {params.results:q} "
        "--out-dir {params.out_dir:q} > {log:q} 2>&1"


rule curves:
    """Has the long budget reached the plateau? Per task and quantized bit-width of the budget axis: the late gain
    of the learning curve (end minus half-way), its 95% CI over seeds and a verdict (flat / rising / inconclusive)."""
    input:
        config=rules.study_config.output[0],
        history=rules.aggregate.output.history,
    output:
        csv=f"{RESULTS}/learning_curves.csv",
        md=report(f"{RESULTS}/tables/learning_curves.md", caption="../report/curves.rst", category="Tables",
                  labels={"axis": "learning curves"}),
    log:
        f"{RUNS}/logs/curves.log",
    benchmark:
        f"{RUNS}/benchmarks/curves.tsv"
    params:
        results=lambda wildcards, input: os.path.dirname(input.history),
    threads: res("aggregate", "threads", 1)
    resources:
        mem_mb=res("aggregate", "mem_mb", 2000),
        runtime=res("aggregate", "runtime", 10),
    conda:
        "../envs/xtc.yaml"
    shell:
        "xtc study curves --config {input.config:q} --results-dir {params.results:q} --out-csv {output.csv:q} "
        "--out-md {output.md:q} > {log:q} 2>&1"


if REFERENCE is not None:

    rule reproduction:
        """The fresh summary.csv against the committed reference's, cell by cell: the difference of the means and
        whether it lies within the reference's 95% CI (reproduction.csv; reproduction.md in the report)."""
        input:
            reference=os.path.join(REFERENCE, "summary.csv"),
            fresh=rules.aggregate.output.summary,
        output:
            csv=f"{RESULTS}/reproduction.csv",
            md=report(f"{RESULTS}/reproduction.md", caption="../report/reproduction.rst", category="Reproduction"),
        log:
            f"{RUNS}/logs/reproduction.log",
        benchmark:
            f"{RUNS}/benchmarks/reproduction.tsv"
        params:
            reference=lambda wildcards, input: os.path.dirname(input.reference),
            results=lambda wildcards, input: os.path.dirname(input.fresh),
        localrule: True
        threads: res("aggregate", "threads", 1)
        resources:
            mem_mb=res("aggregate", "mem_mb", 2000),
            runtime=res("aggregate", "runtime", 10),
        conda:
            "../envs/xtc.yaml"
        shell:
            "xtc study reproduce --reference-dir {params.reference:q} --results-dir {params.results:q} "
            "--out-csv {output.csv:q} --out-md {output.md:q} > {log:q} 2>&1"


# what rule `all` asks for beyond the study itself: the reproduction table where a reference is configured
REPRODUCTION = [] if REFERENCE is None else rules.reproduction.output


rule diagnostics:
    """Why a student stalls: every run's diagnostics at each evaluation (changed weight codes per quantized role,
    train-vs-dev gap, top-class share of dev predictions, KD gradient shares at the first step) as a tidy CSV, a
    Markdown table and the flip-share figure."""
    input:
        config=rules.study_config.output[0],
        runs=study_outputs,
    output:
        csv=f"{RESULTS}/diagnostics.csv",
        md=report(f"{RESULTS}/tables/diagnostics.md", caption="../report/diagnostics.rst", category="Tables",
                  labels={"axis": "diagnostics"}),
        png=report(f"{FIGURES}/flip_share.png", caption="../report/diagnostics.rst", category="Figures",
                   labels={"figure": "flip_share"}),
        pdf=f"{FIGURES}/flip_share.pdf",
    log:
        f"{RUNS}/logs/diagnostics.log",
    benchmark:
        f"{RUNS}/benchmarks/diagnostics.tsv"
    params:
        runs_dir=lambda wildcards: RUNS,
        figures=lambda wildcards, output: os.path.dirname(output.png),
    threads: res("aggregate", "threads", 1)
    resources:
        mem_mb=res("aggregate", "mem_mb", 2000),
        runtime=res("aggregate", "runtime", 10),
    conda:
        "../envs/xtc.yaml"
    shell:
        "MPLBACKEND=Agg xtc study diagnostics --config {input.config:q} --runs-dir {params.runs_dir:q} "
        "--out-csv {output.csv:q} --out-md {output.md:q} --figures-dir {params.figures:q} > {log:q} 2>&1"
