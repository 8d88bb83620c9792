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
        mem_mb=res("prepare_data", "mem_mb"),
        runtime=res("prepare_data", "runtime"),
    params:
        source=(
            f"--dataset imagenet --data-dir {config['imagenet_dir']} --image-size {config['image_size']}"
            if IMAGENET
            else "--dataset digits"
        ),
        fraction=config["data"]["heldout_fraction"],
        seed=config["data"]["seed"],
    shell:
        "python -m adm prepare-data {params.source} --out-train {output.train}"
        " --out-heldout {output.heldout} --heldout-fraction {params.fraction} --seed {params.seed}"
        " --threads {threads} > {log} 2>&1"


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
        shell:
            "python -m evaluations.reference --build-from {input.heldout} --out {output} > {log} 2>&1"

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
        mem_mb=res("featurenet", "mem_mb"),
        runtime=res("featurenet", "runtime"),
    params:
        flags=featurenet_flags(),
    shell:
        "python -m evaluations.demo_net --train {input.train} --heldout {input.heldout}"
        " --out {output} {params.flags} --threads {threads} > {log} 2>&1"
