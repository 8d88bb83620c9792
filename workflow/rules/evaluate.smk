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
        gpu=res("evaluate", "gpu"),
        mem_mb=res("evaluate", "mem_mb"),
        runtime=res("evaluate", "runtime"),
    params:
        flags=evaluator_flags(),
    shell:
        "python -m evaluations.evaluator {input.ref} {input.samples} {params.flags}"
        " --threads {threads} --out {output} > {log} 2>&1"
