# Diffusion model and noisy classifier: trained here, or OpenAI's released checkpoints.
# --restart-on-change: Snakemake reruns a training job when its params change; the trainer then
# discards a checkpoint of other settings (one notice line in the log) instead of reusing old weights,
# and continues one of the same settings (a killed job) exactly.


rule train_diffusion:
    input:
        train=out("data/train.npz"),
    output:
        model=out("diffusion/ema.pt"),
        log_csv=out("diffusion/log.csv"),
        kept=arms.kept_ema_files(config),  # autoguidance guides {step: N}: ema_step<N>.pt
    log:
        logfile("train_diffusion.log"),
    benchmark:
        benchfile("train_diffusion.tsv")
    conda:
        "../envs/torch.yaml"
    threads: res("train_diffusion", "threads")
    resources:
        **slurm_resources("train_diffusion"),
        mem_mb=res("train_diffusion", "mem_mb"),
        runtime=res("train_diffusion", "runtime"),
    params:
        launcher=launcher,
        flags=commands.training_flags(config["diffusion"]) + arms.keep_ema_flags(config),
        out_dir=subpath(output.model, parent=True),
        device=config["device"],
    shell:
        "exec {params.launcher:q} -m adm train-diffusion --data {input.train:q}"
        " --out-dir {params.out_dir:q} {params.flags:q} --device {params.device:q}"
        " --threads {threads:q} --restart-on-change > {log:q} 2>&1"


rule train_classifier:
    input:
        train=out("data/train.npz"),
        heldout=out("data/heldout.npz"),
    output:
        model=out("classifier/model.pt"),
        log_csv=out("classifier/log.csv"),
    log:
        logfile("train_classifier.log"),
    benchmark:
        benchfile("train_classifier.tsv")
    conda:
        "../envs/torch.yaml"
    threads: res("train_classifier", "threads")
    resources:
        **slurm_resources("train_classifier"),
        mem_mb=res("train_classifier", "mem_mb"),
        runtime=res("train_classifier", "runtime"),
    params:
        launcher=launcher,
        flags=commands.training_flags(config["classifier"]),
        diffusion_preset=config["diffusion"]["preset"],
        out_dir=subpath(output.model, parent=True),
        device=config["device"],
    shell:
        "exec {params.launcher:q} -m adm train-classifier --data {input.train:q}"
        " --heldout {input.heldout:q} --out-dir {params.out_dir:q} {params.flags:q}"
        " --diffusion-preset {params.diffusion_preset:q} --device {params.device:q}"
        " --threads {threads:q} --restart-on-change > {log:q} 2>&1"


rule download_checkpoint:
    output:
        out("pretrained/{kind}.pt"),
    log:
        logfile("download_{kind}.log"),
    conda:
        "../envs/torch.yaml"  # torch checks the file's architecture
    params:
        url=partial(commands.checkpoint_url, config),
        sha256=lambda wildcards: config["checkpoints"][f"{wildcards.kind}_sha256"],
        expect=lambda wildcards: {"preset": config[wildcards.kind]["preset"]},
    script:
        "../scripts/download.py"
