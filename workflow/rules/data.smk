# Data, reference batch and the demo feature network.


rule prepare_data:
    output:
        train=out("data/train.npz"),
        heldout=out("data/heldout.npz"),
    log:
        logfile("prepare_data.log"),
    benchmark:
        benchfile("prepare_data.tsv")
    conda:
        "../envs/torch.yaml"
    threads: res("prepare_data", "threads")
    resources:
        **slurm_resources("prepare_data"),
        mem_mb=res("prepare_data", "mem_mb"),
        runtime=res("prepare_data", "runtime"),
    params:
        python=PYTHON,
        source=commands.data_source_args(config),
        fraction=config["data"]["heldout_fraction"],
        seed=config["data"]["seed"],
    shell:
        "exec {params.python:q} -m adm prepare-data {params.source:q} --out-train {output.train:q}"
        " --out-heldout {output.heldout:q} --heldout-fraction {params.fraction:q}"
        " --seed {params.seed:q} --threads {threads:q} > {log:q} 2>&1"


if config["reference"]["source"] == "build":

    rule build_reference:
        input:
            heldout=out("data/heldout.npz"),
        output:
            out("reference/ref.npz"),
        log:
            logfile("reference.log"),
        conda:
            "../envs/tensorflow.yaml"
        params:
            python=PYTHON,
        shell:
            "exec {params.python:q} -m evaluations.reference --build-from {input.heldout:q}"
            " --out {output:q} > {log:q} 2>&1"

else:

    localrules:
        download_reference,

    rule download_reference:
        output:
            out("reference/ref.npz"),
        log:
            logfile("reference.log"),
        conda:
            "../envs/tensorflow.yaml"
        params:
            url=config["reference"]["url"],
            sha256=config["reference"]["sha256"],
            expect={"resolution": config["image_size"]},
        script:
            "../scripts/download.py"


rule featurenet:
    input:
        train=out("data/train.npz"),
        heldout=out("data/heldout.npz"),
    output:
        out("featurenet/graph.pb"),
    log:
        logfile("featurenet.log"),
    benchmark:
        benchfile("featurenet.tsv")
    conda:
        "../envs/tensorflow.yaml"
    threads: res("featurenet", "threads")
    resources:
        **slurm_resources("featurenet"),
        mem_mb=res("featurenet", "mem_mb"),
        runtime=res("featurenet", "runtime"),
    params:
        python=PYTHON,
        flags=commands.featurenet_flags(config),
    shell:
        "exec {params.python:q} -m evaluations.demo_net --train {input.train:q}"
        " --heldout {input.heldout:q} --out {output:q} {params.flags:q} --threads {threads:q}"
        " > {log:q} 2>&1"
