# Every quantized student as a bit-packed .xtc file; `xtc export` prints the file's size report
# (xtc.pack.size_report, as `xtc size` does), kept as size.json for runs.csv and the size figure.


rule export:
    """Pack a quantized student (1-bit: 8 signs/byte, ternary: 5 trits/byte) and record its sizes."""
    input:
        paths.metrics_file(RUNS, paths.student_run_id("{key}")),
    output:
        packed=paths.export_file(RUNS, "{key}"),
        size=paths.size_file(RUNS, "{key}"),
    log:
        paths.log_file(RUNS, paths.export_job("{key}")),
    benchmark:
        paths.benchmark_file(RUNS, paths.export_job("{key}"))
    params:
        model=lambda wildcards, input: os.path.dirname(input[0]),
    threads: res("export", "threads", 1)
    resources:
        mem_mb=res("export", "mem_mb", 3000),
        runtime=res("export", "runtime", 10),
        gpu=res("export", "gpu", 0),
        gpu_slots=res("export", "gpu_slots", 0),
        cpus_per_task=res("export", "threads", 1),
    conda:
        "../envs/xtc.yaml"
    shell:
        "xtc export --model {params.model:q} --out {output.packed:q} --overwrite > {output.size:q} 2> {log:q}"
