# Aggregation and report: the effective config, runs.csv/summary.csv/missing.csv, one table per axis, the
# claims check and the figures. `xtc study all` does the same on a partial tree, outside Snakemake.


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
    config allows an incomplete study)."""
    input:
        config=rules.study_config.output[0],
        runs=study_outputs,
    output:
        runs=f"{RESULTS}/runs.csv",
        summary=report(f"{RESULTS}/summary.csv", caption="../report/summary.rst", category="Results"),
        missing=f"{RESULTS}/missing.csv",
        versions=f"{RESULTS}/versions.json",
    log:
        f"{RUNS}/logs/aggregate.log",
    benchmark:
        f"{RUNS}/benchmarks/aggregate.tsv"
    params:
        runs_dir=RUNS,
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
    """A verdict on each of the recipe's five findings, with the numbers behind it."""
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
    """Score vs budget, learning rate, KD mode, depth and model size (PNG and PDF)."""
    input:
        config=rules.study_config.output[0],
        runs=rules.aggregate.output.runs,
    output:
        [report(f"{FIGURES}/{name}.png", caption=f"../report/{name}.rst", category="Figures",
                labels={"figure": name}) for name in study.FIGURES],
        [f"{FIGURES}/{name}.pdf" for name in study.FIGURES],
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
