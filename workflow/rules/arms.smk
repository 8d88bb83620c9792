# Guidance arms and seed sets: sample -> merge -> evaluate per (arm, seed, scale) under
# results/<run>/arms/<arm>/seed<S>/, the classifier-free guidance model, the comparison table and
# the trade-off plots. Paths, arm lists and argument helpers: workflow/lib/arms.py.


rule arm_sample:
    input:
        unpack(partial(arms.arm_sample_inputs, config)),
    output:
        out("arms/{arm}/seed{seed}/samples/scale{scale}/shard{shard}.npz"),
    log:
        logfile("arms/{arm}/seed{seed}/sample/scale{scale}_shard{shard}.log"),
    benchmark:
        benchfile("arm_sample/{arm}_seed{seed}_scale{scale}_shard{shard}.tsv")
    conda:
        "../envs/torch.yaml"
    threads: res("sample", "threads")
    resources:
        **slurm_resources("sample"),
        mem_mb=res("sample", "mem_mb"),
        runtime=res("sample", "runtime"),
    params:
        python=PYTHON,
        guidance=partial(arms.guidance_flags, config),
        num_samples=partial(arms.arm_sampling_param, config, "num_samples"),
        num_shards=partial(arms.arm_sampling_param, config, "num_shards"),
        respacing=paths.respacing_spec(SAMPLING),
        batch_size=SAMPLING["batch_size"],
        labels=SAMPLING["labels"],
        precision=SAMPLING["precision"],
        presets=commands.sampler_flags(config),
        device=config["device"],
    shell:
        "exec {params.python:q} -m adm sample --model {input.model:q} {params.guidance:q}"
        " {params.presets:q} --scale {wildcards.scale:q}"
        " --num-samples {params.num_samples:q} --shard {wildcards.shard:q}"
        " --num-shards {params.num_shards:q} --seed {wildcards.seed:q}"
        " --respacing {params.respacing:q} --batch-size {params.batch_size:q}"
        " --labels {params.labels:q} --precision {params.precision:q}"
        " --device {params.device:q} --threads {threads:q}"
        " --out {output:q} > {log:q} 2>&1"


rule arm_merge:
    input:
        partial(arms.arm_merge_inputs, config),
    output:
        out("arms/{arm}/seed{seed}/samples/scale{scale}.npz"),
    log:
        logfile("arms/{arm}/seed{seed}/merge/scale{scale}.log"),
    benchmark:
        benchfile("arm_merge/{arm}_seed{seed}_scale{scale}.tsv")
    conda:
        "../envs/torch.yaml"
    resources:
        mem_mb=res("sample", "mem_mb"),
    params:
        python=PYTHON,
        num_samples=partial(arms.arm_sampling_param, config, "num_samples"),
    shell:
        "exec {params.python:q} -m adm merge --out {output:q} --num-samples {params.num_samples:q}"
        " {input:q} > {log:q} 2>&1"


rule arm_evaluate:
    input:
        unpack(partial(commands.evaluator_inputs, config)),
        ref=out("reference/ref.npz"),
        samples=out("arms/{arm}/seed{seed}/samples/scale{scale}.npz"),
    output:
        out("arms/{arm}/seed{seed}/metrics/scale{scale}.json"),
    log:
        logfile("arms/{arm}/seed{seed}/evaluate/scale{scale}.log"),
    benchmark:
        benchfile("arm_evaluate/{arm}_seed{seed}_scale{scale}.tsv")
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


if arms.cfg_on(config):

    # The classifier-free guidance model: the train_diffusion rule's conventions (--restart-on-change,
    # torchrun over the job's GPUs), its settings, plus cfg_model.label_dropout (a null class); with
    # cfg_model.init: main, fine-tuned from the main model's checkpoint.
    rule train_cfg_model:
        input:
            unpack(lambda wildcards: arms.cfg_model_inputs(config)),
        output:
            model=arms.cfg_checkpoint(config),
            log_csv=out("cfg_model/log.csv"),
        log:
            logfile("train_cfg_model.log"),
        benchmark:
            benchfile("train_cfg_model.tsv")
        conda:
            "../envs/torch.yaml"
        threads: res("train_cfg_model", "threads")
        resources:
            **slurm_resources("train_cfg_model"),
            mem_mb=res("train_cfg_model", "mem_mb"),
            runtime=res("train_cfg_model", "runtime"),
        params:
            launcher=launcher,
            flags=commands.training_flags(arms.cfg_model_settings(config))
            + arms.cfg_init_flags(config),
            out_dir=subpath(output.model, parent=True),
            device=config["device"],
        shell:
            "exec {params.launcher:q} -m adm train-diffusion --data {input.train:q}"
            " --out-dir {params.out_dir:q} {params.flags:q}"
            " --device {params.device:q}"
            " --threads {threads:q} --restart-on-change > {log:q} 2>&1"


if arms.trained_guides(config):

    # An autoguidance guide trained by its own job (an arm's guide: {preset, steps, ...}): the
    # train_diffusion rule's conventions, its settings overridden by the guide's keys.
    rule train_guide_model:
        input:
            train=out("data/train.npz"),
        output:
            model=out("guides/{arm}/ema.pt"),
            log_csv=out("guides/{arm}/log.csv"),
        log:
            logfile("train_guide_model/{arm}.log"),
        benchmark:
            benchfile("train_guide_model/{arm}.tsv")
        wildcard_constraints:
            arm="|".join(arms.trained_guides(config)),
        conda:
            "../envs/torch.yaml"
        threads: res("train_guide_model", "threads")
        resources:
            **slurm_resources("train_guide_model"),
            mem_mb=res("train_guide_model", "mem_mb"),
            runtime=res("train_guide_model", "runtime"),
        params:
            launcher=launcher,
            flags=lambda wildcards: commands.training_flags(
                arms.guide_model_settings(config, wildcards.arm)
            ),
            out_dir=subpath(output.model, parent=True),
            device=config["device"],
        shell:
            "exec {params.launcher:q} -m adm train-diffusion --data {input.train:q}"
            " --out-dir {params.out_dir:q} {params.flags:q}"
            " --device {params.device:q}"
            " --threads {threads:q} --restart-on-change > {log:q} 2>&1"


rule comparison:
    input:
        metrics=arms.arm_metrics(config),
        fd_dinov2=arms.arm_fd_dinov2(config),
    output:
        csv=report(
            out("comparison.csv"),
            caption="../report/comparison.rst",
            category="Guidance comparison",
        ),
        md=report(
            out("comparison.md"),
            caption="../report/comparison.rst",
            category="Guidance comparison",
        ),
    log:
        logfile("comparison.log"),
    conda:
        "../envs/torch.yaml"
    params:
        entries=arms.comparison_entries(config),
    script:
        "../scripts/comparison.py"


# With evaluation.fd_dinov2 also each point's FD_DINOv2 record and tradeoff_fd_dinov2.* (off: the
# inputs, params and outputs of a run without it).
rule tradeoff_plots:
    input:
        arms.arm_metrics(config),
        arms.arm_fd_dinov2(config),
    output:
        report(
            arms.tradeoff_plots(config),
            caption="../report/tradeoff.rst",
            category="Guidance comparison",
        ),
    log:
        logfile("tradeoff_plots.log"),
    conda:
        "../envs/torch.yaml"
    params:
        entries=arms.comparison_entries(config),
        compare_paper=IMAGENET and config["image_size"] == 128,
        out_dir=subpath(output[0], parent=True),
    script:
        "../scripts/tradeoff_plots.py"
