# FD_DINOv2 beside FID (evaluation.fd_dinov2): DINOv2 ViT-L/14 features in their own PyTorch job per
# batch (the reference once), the Fréchet distance in a numpy job (evaluations.fd_features, the FID
# maths). TensorFlow and PyTorch never share a process. The guidance arms' runs get theirs by the
# same two jobs (arm_dinov2_features, arm_fd_dinov2), for the comparison table.


if config["evaluation"]["fd_dinov2"]:

    localrules:
        download_dinov2,

    # The weights, once per run on the submit host, into the shared cache; sha256 recorded in the
    # run's provenance lock; a file of another architecture is refused (keys and shapes).
    rule download_dinov2:
        output:
            weights=out("dinov2/dinov2_vitl14_pretrain.pth"),
            lock=out("provenance/dinov2.lock"),
        log:
            logfile("download_dinov2.log"),
        conda:
            "../envs/torch.yaml"
        params:
            url=config["evaluation"]["dinov2_url"],
            sha256=config["evaluation"]["dinov2_sha256"],
            cache_dir=config["evaluation"]["cache_dir"],
            expect={"dinov2": True},
        script:
            "../scripts/download.py"

    # One job per batch: "reference" (the reference batch) or "scale<s>" (a merged sample batch).
    rule dinov2_features:
        input:
            images=partial(commands.dinov2_images, config),
            weights=out("dinov2/dinov2_vitl14_pretrain.pth"),
            lock=out("provenance/dinov2.lock"),
        output:
            out("dinov2/{name}.npz"),
        log:
            logfile("dinov2/{name}.log"),
        benchmark:
            benchfile("dinov2/{name}.tsv")
        wildcard_constraints:
            name=r"reference|scale\d+(\.\d+)?",
        conda:
            "../envs/torch.yaml"
        threads: res("dinov2_features", "threads")
        resources:
            **slurm_resources("dinov2_features"),
            mem_mb=res("dinov2_features", "mem_mb"),
            runtime=res("dinov2_features", "runtime"),
        params:
            python=PYTHON,
            flags=commands.dinov2_flags(config),
        shell:
            "exec {params.python:q} -m adm features-dinov2 --images {input.images:q}"
            " --weights {input.weights:q} --weights-lock {input.lock:q} --out {output:q} {params.flags:q}"
            " --threads {threads:q} > {log:q} 2>&1"

    # The config's sha256 pin goes to the record (weights_pinned): without one, the reports label
    # FD_DINOv2 "unverified DINOv2 weights".
    rule fd_dinov2:
        input:
            ref=out("dinov2/reference.npz"),
            samples=out("dinov2/scale{scale}.npz"),
        output:
            out("metrics/fd_dinov2_scale{scale}.json"),
        log:
            logfile("fd_dinov2/scale{scale}.log"),
        conda:
            "../envs/tensorflow.yaml"
        params:
            python=PYTHON,
            bootstrap=config["evaluation"]["bootstrap"],
            flags=commands.fd_dinov2_flags(config),
        shell:
            "exec {params.python:q} -m evaluations.fd_features {input.ref:q} {input.samples:q}"
            " --bootstrap {params.bootstrap:q} --out {output:q} {params.flags:q} > {log:q} 2>&1"

    # A guidance arm's run (arms/<arm>/seed<S>/): the same features job (weights, feature cache)
    # and FD job; the classifier sweep's first seed is Table 1's and reads Table 1's record.
    use rule dinov2_features as arm_dinov2_features with:
        input:
            images=out("arms/{arm}/seed{seed}/samples/scale{scale}.npz"),
            weights=out("dinov2/dinov2_vitl14_pretrain.pth"),
            lock=out("provenance/dinov2.lock"),
        output:
            out("arms/{arm}/seed{seed}/dinov2/scale{scale}.npz"),
        log:
            logfile("arms/{arm}/seed{seed}/dinov2/scale{scale}.log"),
        benchmark:
            benchfile("arm_dinov2_features/{arm}_seed{seed}_scale{scale}.tsv")

    use rule fd_dinov2 as arm_fd_dinov2 with:
        input:
            ref=out("dinov2/reference.npz"),
            samples=out("arms/{arm}/seed{seed}/dinov2/scale{scale}.npz"),
        output:
            out("arms/{arm}/seed{seed}/metrics/fd_dinov2_scale{scale}.json"),
        log:
            logfile("arms/{arm}/seed{seed}/fd_dinov2/scale{scale}.log"),
