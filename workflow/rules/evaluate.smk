# FID, sFID, IS, precision and recall of each scale against the reference batch (TensorFlow process).


rule evaluate:
    input:
        unpack(partial(commands.evaluator_inputs, config)),
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
        python=PYTHON,
        flags=commands.evaluator_flags(config),
    shell:
        "exec {params.python:q} -m evaluations.evaluator {input.ref:q} {input.samples:q}"
        " {params.flags:q} --threads {threads:q} --out {output:q} > {log:q} 2>&1"


if IMAGENET:

    localrules:
        download_graph,

    # The Inception graph, once per run on the submit host (compute nodes may have no internet):
    # downloaded into the shared cache (locked against concurrent runs), linked here, and its
    # sha256 written to the run's provenance lock, which every evaluation enforces.
    rule download_graph:
        output:
            graph=out("inception/classify_image_graph_def.pb"),
            lock=out("provenance/feature_graph.lock"),
        log:
            logfile("download_graph.log"),
        conda:
            "../envs/tensorflow.yaml"
        params:
            url=config["evaluation"]["graph_url"],
            sha256=config["evaluation"]["graph_sha256"],
            cache_dir=config["evaluation"]["cache_dir"],
        script:
            "../scripts/download.py"
