# Combine per-job datasets into results/summary/<analysis>.nc, then draw the figures from the summaries only.

SUMMARY_INPUTS = {
    "training": lambda: run_files("train.nc"),
    "waking": lambda: run_files("waking.nc"),
}


def summary_files():
    files = [f"{RESULTS}/summary/{name}.nc" for name in SUMMARY_INPUTS]
    if NORMALIZATION_JOBS:
        files.append(f"{RESULTS}/summary/normalization.nc")
    return files


def figure_files():
    names = ["training_curves", "decoded_trajectories", "error_over_time"]
    if NORMALIZATION_JOBS:
        names.append("normalization")
    return [f"{RESULTS}/figures/{name}.{ext}" for name in names for ext in ("png", "pdf")]


rule collect:
    input:
        lambda w: SUMMARY_INPUTS[w.analysis](),
    output:
        f"{RESULTS}/summary/{{analysis}}.nc",
    log:
        f"{RESULTS}/logs/collect/{{analysis}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/collect/{{analysis}}.tsv"
    wildcard_constraints:
        analysis="|".join(SUMMARY_INPUTS),
    threads: 1
    resources:
        mem_mb=8000,
        runtime=30,
    shell:
        "recircuit collect {input} --out {output} > {log} 2>&1"


rule figures:
    input:
        summary_files(),
    output:
        figure_files(),
    log:
        f"{RESULTS}/logs/figures.log",
    benchmark:
        f"{RESULTS}/benchmarks/figures.tsv"
    params:
        summary=f"{RESULTS}/summary",
        out=f"{RESULTS}/figures",
    threads: 1
    resources:
        mem_mb=8000,
        runtime=30,
    shell:
        THREADS_ENV + " recircuit figures --summary {params.summary} --out {params.out} > {log} 2>&1"
