# Combine per-job datasets into results/summary/<analysis>.nc, then draw the figures from the summaries only.

# summary name -> the per-run files it combines (analyses appear only when the config covers some circuit)
SUMMARY_INPUTS = {
    "training": lambda: run_files("train.nc"),
    "waking": lambda: run_files("waking.nc"),
    "curvature": lambda: run_files("curvature.nc", CURVATURE_JOBS),
    "reactivation": lambda: [f"{RESULTS}/reactivation/{c}/seed{s}.nc" for c, s in REACTIVATION_GROUPS],
    "quiescence": lambda: run_files("quiescence.nc", REACTIVATION_JOBS),
    "spiking": lambda: run_files("spiking.nc", SPIKING_JOBS),
}


def summary_names():
    names = ["training", "waking"]
    if CURVATURE_JOBS:
        names += ["curvature", "curvature_comparison"]
    if REACTIVATION_JOBS:
        names += ["reactivation", "quiescence"]
    if NORMALIZATION_JOBS:
        names.append("normalization")
    if SPIKING_JOBS:
        names.append("spiking")
    return names


def summary_files():
    return [f"{RESULTS}/summary/{name}.nc" for name in summary_names()]


# summaries whose claims `recircuit <name>-report` checks seed by seed, into results/summary/<name>_report.txt
REPORTS = ("reactivation", "spiking")


def report_files():
    return [f"{RESULTS}/summary/{name}_report.txt" for name in REPORTS if name in summary_names()]


# figure group (recircuit figures --only) -> the summaries it draws from; one job per group, so each is drawn as
# soon as its summaries exist, in parallel with the rest of the sweep
FIGURE_NEEDS = {
    "training": ["training", "waking"],
    "normalization": ["normalization"],
    "curvature": ["curvature"],
    "reactivation": ["reactivation"],
    "spiking": ["spiking"],
}


def figure_dirs():
    names = set(summary_names())
    return [
        f"{RESULTS}/figures/{group}" for group, needs in FIGURE_NEEDS.items() if set(needs) <= names
    ]


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


rule curvature_comparison:
    input:
        f"{RESULTS}/summary/curvature.nc",
    output:
        f"{RESULTS}/summary/curvature_comparison.nc",
    log:
        f"{RESULTS}/logs/curvature_comparison.log",
    benchmark:
        f"{RESULTS}/benchmarks/curvature_comparison/all.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    shell:
        THREADS_ENV + " recircuit curvature-comparison {input} --out {output} > {log} 2>&1"


rule report:
    input:
        f"{RESULTS}/summary/{{report}}.nc",
    output:
        f"{RESULTS}/summary/{{report}}_report.txt",
    log:
        f"{RESULTS}/logs/report/{{report}}.log",
    wildcard_constraints:
        report="|".join(REPORTS),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    shell:
        "recircuit {wildcards.report}-report {input} > {output} 2> {log}"


rule figures:
    input:
        lambda w: [f"{RESULTS}/summary/{name}.nc" for name in FIGURE_NEEDS[w.group]],
    output:
        directory(f"{RESULTS}/figures/{{group}}"),
    log:
        f"{RESULTS}/logs/figures/{{group}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/figures/{{group}}.tsv"
    wildcard_constraints:
        group="|".join(FIGURE_NEEDS),
    params:
        summary=f"{RESULTS}/summary",
    threads: 1
    resources:
        mem_mb=8000,
        runtime=30,
    shell:
        THREADS_ENV + " recircuit figures --summary {params.summary} --only {wildcards.group} --out {output}"
        " > {log} 2>&1"
