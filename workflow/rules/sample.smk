# Guided sampling, one job per (scale, shard): shard k of n holds global sample indices
# [k·N//n, (k+1)·N//n), and every image's noise and label depend on (seed, index) only, so the
# merged batch does not depend on the shard count and every scale starts from the same noise.


rule sample:
    input:
        model=diffusion_checkpoint(),
        classifier=classifier_checkpoint(),
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
        gpu=res("sample", "gpu"),
        mem_mb=res("sample", "mem_mb"),
        runtime=res("sample", "runtime"),
    params:
        num_samples=SAMPLING["num_samples"],
        num_shards=SAMPLING["num_shards"],
        seed=SAMPLING["seed"],
        respacing=respacing(),
        batch_size=SAMPLING["batch_size"],
        labels=SAMPLING["labels"],
        presets=preset_flags(),
        device=config["device"],
    shell:
        "python -m adm sample --model {input.model} --classifier {input.classifier} {params.presets}"
        " --scale {wildcards.scale} --num-samples {params.num_samples} --shard {wildcards.shard}"
        " --num-shards {params.num_shards} --seed {params.seed} --respacing {params.respacing}"
        " --batch-size {params.batch_size} --labels {params.labels} --device {params.device}"
        " --threads {threads} --out {output} > {log} 2>&1"


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
        num_samples=SAMPLING["num_samples"],
    shell:
        "python -m adm merge --out {output} --num-samples {params.num_samples} {input} > {log} 2>&1"
