# Guided sampling, one job per (scale, shard): shard k of n holds global sample indices
# [k·N//n, (k+1)·N//n), and every image's noise and label depend on (seed, index) only, so the
# merged batch does not depend on the shard count and every scale starts from the same noise.


rule sample:
    input:
        model=commands.diffusion_checkpoint(config),
        classifier=commands.classifier_checkpoint(config),
    output:
        out("samples/scale{scale}/shard{shard}.npz"),
    log:
        logfile("sample/scale{scale}_shard{shard}.log"),
    benchmark:
        benchfile("sample/scale{scale}_shard{shard}.tsv")
    conda:
        "../envs/torch.yaml"
    threads: res("sample", "threads")
    resources:
        **slurm_resources("sample"),
        mem_mb=res("sample", "mem_mb"),
        runtime=res("sample", "runtime"),
    params:
        python=PYTHON,
        num_samples=SAMPLING["num_samples"],
        num_shards=SAMPLING["num_shards"],
        seed=SAMPLING["seed"],
        respacing=paths.respacing_spec(SAMPLING),
        batch_size=SAMPLING["batch_size"],
        labels=SAMPLING["labels"],
        precision=SAMPLING["precision"],
        presets=commands.sampler_flags(config),
        device=config["device"],
    shell:
        "exec {params.python:q} -m adm sample --model {input.model:q}"
        " --classifier {input.classifier:q} {params.presets:q} --scale {wildcards.scale:q}"
        " --num-samples {params.num_samples:q} --shard {wildcards.shard:q}"
        " --num-shards {params.num_shards:q} --seed {params.seed:q}"
        " --respacing {params.respacing:q} --batch-size {params.batch_size:q}"
        " --labels {params.labels:q} --precision {params.precision:q}"
        " --device {params.device:q} --threads {threads:q}"
        " --out {output:q} > {log:q} 2>&1"


rule merge_shards:
    input:
        expand(out("samples/scale{{scale}}/shard{shard}.npz"), shard=SHARDS),
    output:
        out("samples/scale{scale}.npz"),
    log:
        logfile("merge/scale{scale}.log"),
    benchmark:
        benchfile("merge_shards/scale{scale}.tsv")
    conda:
        "../envs/torch.yaml"
    resources:
        mem_mb=res("sample", "mem_mb"),
    params:
        python=PYTHON,
        num_samples=SAMPLING["num_samples"],
    shell:
        "exec {params.python:q} -m adm merge --out {output:q} --num-samples {params.num_samples:q}"
        " {input:q} > {log:q} 2>&1"
