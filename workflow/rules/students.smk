# Stages 1-2: every student of the grid, one `xtc compress` each. A student's id names every setting
# (xtc.study.paths: student/task~T/depth~k/.../seed~s), so a run shared by several axes exists once; its
# flags and inputs come from the runs table, looked up by that id:
#   init~teacher: layer reduction (--layers k) and/or quantization straight from the teacher;
#   init~step1:   XTC step 2, quantization starting from the fp32 layer-reduced step-1 run (--init).


rule student:
    """Train one student: layer reduction, weight/activation quantization and KD as its folder name says."""
    input:
        unpack(run_inputs),
    output:
        paths.metrics_file(RUNS, "{run}"),
    log:
        paths.log_file(RUNS, "{run}"),
    benchmark:
        paths.benchmark_file(RUNS, "{run}")
    wildcard_constraints:
        run=paths.STUDENT_RUN_RE,
    params:
        out=run_folder,
        state=run_state,
        args=run_args(),
    threads: res("student", "threads", 1)
    resources:
        mem_mb=res("student", "mem_mb", 4000),
        runtime=res("student", "runtime", 60),
        gpu=res("student", "gpu", 0),
        gpu_slots=res("student", "gpu_slots", 0),
        cpus_per_task=res("student", "threads", 1),
    conda:
        "../envs/xtc.yaml"
    shell:
        FRESH_RUN + "xtc compress {params.args} > {log:q} 2>&1"
