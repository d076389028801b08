# Training and held-out evaluation of one circuit x variant x seed.

rule train:
    input:
        spec=spec_of,
    output:
        model=f"{RESULTS}/{{circuit}}/{{variant}}/seed{{seed}}/model.pt",
        train=f"{RESULTS}/{{circuit}}/{{variant}}/seed{{seed}}/train.nc",
    log:
        f"{RESULTS}/logs/train/{{circuit}}_{{variant}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{circuit}}_{{variant}}_seed{{seed}}.tsv"
    params:
        overrides=run_overrides,
        out=lambda w: run_dir(w.circuit, w.variant, w.seed),
    threads: 1
    resources:
        gpu=uses_gpu(),
        mem_mb=4000,
        runtime=240,
    shell:
        THREADS_ENV + " recircuit train {input.spec} --circuit {wildcards.circuit} --variant {wildcards.variant}"
        " --seed {wildcards.seed} --out {params.out} {params.overrides} > {log} 2>&1"


rule evaluate:
    input:
        model=rules.train.output.model,
    output:
        f"{RESULTS}/{{circuit}}/{{variant}}/seed{{seed}}/waking.nc",
    log:
        f"{RESULTS}/logs/evaluate/{{circuit}}_{{variant}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{circuit}}_{{variant}}_seed{{seed}}.tsv"
    threads: 1
    resources:
        gpu=0,
        mem_mb=4000,
        runtime=30,
    shell:
        THREADS_ENV + " recircuit evaluate $(dirname {input.model}) --out {output} --device cpu > {log} 2>&1"
