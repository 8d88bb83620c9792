# FID, sFID, IS, precision and recall of each scale against the reference batch (TensorFlow process).


rule evaluate:
    input:
        unpack(evaluator_inputs),
        ref=out("reference/ref.npz"),
        samples=out("samples/scale{scale}.npz"),
    output:
        out("metrics/scale{scale}.json"),
    log:
        logfile("evaluate/scale{scale}.log"),
    benchmark:
        benchfile("evaluate/scale{scale}.tsv")
    conda:
        "../envs/tensorflow.yaml"
    threads: res("evaluate", "threads")
    resources:
        **slurm_resources("evaluate"),
        mem_mb=res("evaluate", "mem_mb"),
        runtime=res("evaluate", "runtime"),
    params:
        python=python(),
        flags=evaluator_flags(),
    shell:
        "{params.python:q} -m evaluations.evaluator {input.ref:q} {input.samples:q}"
        " {params.flags:q} --threads {threads:q} --out {output:q} > {log:q} 2>&1"
