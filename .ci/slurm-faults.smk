# Two jobs that break their Slurm limits, for .ci/slurm-checks (run with the Slurm profile, --keep-going):
# `oom` holds 1 GiB with mem_mb=400, `timeout` sleeps past runtime=1 (minute). Both must be reported failed
# with Slurm's reason in the log ("exceeded memory limit", "DUE TO TIME LIMIT"), not hang. mem_mb covers the
# job's own Snakemake process too (about 150 MB).


rule all:
    input:
        "oom.done",
        "timeout.done",


rule oom:
    output:
        "oom.done",
    resources:
        mem_mb=400,
        runtime=5,
    shell:
        "python3 -c 'import time; x = bytearray(b\"x\") * (1 << 30); time.sleep(60)'; touch {output}"


rule timeout:
    output:
        "timeout.done",
    resources:
        mem_mb=1000,
        runtime=1,
    shell:
        "sleep 600; touch {output}"
