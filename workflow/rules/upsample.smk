# The super-resolution stage (ADM-G + ADM-U), switched on by upsample.enabled: the base
# samples of upsample.scales -> (demo: area-downsampled to the upsampler's low-res size) ->
# upsample(scale, shard) -> merge -> evaluate at the high resolution -> upsample_table + grids at
# both resolutions -> a report section. Outputs under results/<run>/upsample/. With the stage off
# no rule here is defined and every other output is unchanged. Paths and helpers: workflow/lib/upsample.py.
#
# The demo arrangement (digits): the base model makes 8x8 samples, so they are downsampled 8->4
# and the 4->8 demo upsampler brings them back; evaluated against the same 8x8 reference. It is
# labelled as such in the table and the report. ImageNet: the 128x128 samples go straight into
# the 128->512 upsampler and are evaluated against OpenAI's 512 reference batch. Either way the
# same low-res inputs are also resized by bicubic interpolation and evaluated: the baseline row.

if upsample.enabled(config):

    localrules:
        downsample_samples,
        upsample_table,
        upsample_grid,
        lowres_grid,

    if not UPSAMPLE["pretrained"]:

        # Low-res made from the same training image by area downsampling (adm/training/upsampler.py).
        rule train_upsampler:
            input:
                train=out("data/train.npz"),
            output:
                model=out("upsample/model/ema.pt"),
                log_csv=out("upsample/model/log.csv"),
            log:
                logfile("train_upsampler.log"),
            benchmark:
                benchfile("train_upsampler.tsv")
            conda:
                "../envs/torch.yaml"
            threads: res("train_upsampler", "threads")
            resources:
                **slurm_resources("train_upsampler"),
                mem_mb=res("train_upsampler", "mem_mb"),
                runtime=res("train_upsampler", "runtime"),
            params:
                launcher=launcher,
                flags=commands.training_flags(UPSAMPLE["model"]),
                out_dir=subpath(output.model, parent=True),
                device=config["device"],
            shell:
                "exec {params.launcher:q} -m adm train-upsampler --data {input.train:q}"
                " --out-dir {params.out_dir:q} {params.flags:q} --device {params.device:q}"
                " --threads {threads:q} --restart-on-change > {log:q} 2>&1"

    elif not upsample.local_upsampler(config):

        localrules:
            download_upsampler,

        rule download_upsampler:
            output:
                out("pretrained/upsampler.pt"),
            log:
                logfile("download_upsampler.log"),
            conda:
                "../envs/torch.yaml"  # torch checks the file's architecture
            params:
                url=upsample.upsampler_url(config),
                sha256=UPSAMPLE["checkpoint_sha256"],
                expect={"preset": UPSAMPLE["model"]["preset"]},
            script:
                "../scripts/download.py"

    if IMAGENET:

        localrules:
            download_upsample_reference,

        rule download_upsample_reference:
            output:
                out("upsample/reference/ref.npz"),
            log:
                logfile("upsample/reference.log"),
            conda:
                "../envs/tensorflow.yaml"
            params:
                url=UPSAMPLE["reference"]["url"],
                sha256=UPSAMPLE["reference"]["sha256"],
                expect={"resolution": upsample.high_size(config)},
            script:
                "../scripts/download.py"

    # Demo only: the base model's 8x8 samples made 4x4 as the upsampler was trained (area).
    rule downsample_samples:
        input:
            out("samples/scale{scale}.npz"),
        output:
            out("upsample/lowres/scale{scale}.npz"),
        log:
            logfile("upsample/downsample/scale{scale}.log"),
        conda:
            "../envs/torch.yaml"
        params:
            size=upsample.low_size(config),
        script:
            "../scripts/downsample.py"

    rule upsample:
        input:
            model=upsample.upsampler_checkpoint(config),
            low_res=partial(upsample.low_res_input, config),
        output:
            out("upsample/samples/scale{scale}/shard{shard}.npz"),
        log:
            logfile("upsample/sample/scale{scale}_shard{shard}.log"),
        benchmark:
            benchfile("upsample/scale{scale}_shard{shard}.tsv")
        conda:
            "../envs/torch.yaml"
        threads: res("upsample", "threads")
        resources:
            **slurm_resources("upsample"),
            mem_mb=res("upsample", "mem_mb"),
            runtime=res("upsample", "runtime"),
        params:
            python=PYTHON,
            presets=upsample.upsampler_flags(config),
            num_shards=UPSAMPLE["num_shards"],
            seed=UPSAMPLE["seed"],
            respacing=paths.respacing_spec(UPSAMPLE),
            batch_size=UPSAMPLE["batch_size"],
            precision=UPSAMPLE["precision"],
            device=config["device"],
        shell:
            "exec {params.python:q} -m adm upsample --model {input.model:q} {params.presets:q}"
            " --low-res {input.low_res:q} --shard {wildcards.shard:q}"
            " --num-shards {params.num_shards:q} --seed {params.seed:q}"
            " --respacing {params.respacing:q} --batch-size {params.batch_size:q}"
            " --precision {params.precision:q} --device {params.device:q}"
            " --threads {threads:q} --out {output:q} > {log:q} 2>&1"

    rule merge_upsampled:
        input:
            expand(
                out("upsample/samples/scale{{scale}}/shard{shard}.npz"),
                shard=UP_SHARDS,
            ),
        output:
            out("upsample/samples/scale{scale}.npz"),
        log:
            logfile("upsample/merge/scale{scale}.log"),
        benchmark:
            benchfile("upsample_merge/scale{scale}.tsv")
        conda:
            "../envs/torch.yaml"
        resources:
            mem_mb=res("upsample", "mem_mb"),
        params:
            python=PYTHON,
            num_samples=SAMPLING["num_samples"],
        shell:
            "exec {params.python:q} -m adm merge --out {output:q} --num-samples {params.num_samples:q}"
            " {input:q} > {log:q} 2>&1"

    rule evaluate_upsampled:
        input:
            unpack(partial(commands.evaluator_inputs, config)),
            ref=upsample.reference(config),
            samples=out("upsample/samples/scale{scale}.npz"),
        output:
            out("upsample/metrics/scale{scale}.json"),
        log:
            logfile("upsample/evaluate/scale{scale}.log"),
        benchmark:
            benchfile("upsample_evaluate/scale{scale}.tsv")
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

    # The baseline beside it: the same low-res inputs resized by bicubic interpolation (no
    # network), evaluated against the same reference, so the table shows whether the learned
    # upsampler beats interpolation. One cheap job and one evaluation per upsampled scale.
    rule interpolate_lowres:
        input:
            partial(upsample.low_res_input, config),
        output:
            out("upsample/bicubic/scale{scale}.npz"),
        log:
            logfile("upsample/bicubic/scale{scale}.log"),
        benchmark:
            benchfile("upsample_bicubic/scale{scale}.tsv")
        conda:
            "../envs/torch.yaml"
        resources:
            mem_mb=res("upsample", "mem_mb"),
        params:
            size=upsample.high_size(config),
            mode=upsample.BASELINE,
        script:
            "../scripts/interpolate.py"

    use rule evaluate_upsampled as evaluate_interpolated with:
        input:
            unpack(partial(commands.evaluator_inputs, config)),
            ref=upsample.reference(config),
            samples=out("upsample/bicubic/scale{scale}.npz"),
        output:
            out("upsample/bicubic_metrics/scale{scale}.json"),
        log:
            logfile("upsample/bicubic_evaluate/scale{scale}.log"),
        benchmark:
            benchfile("upsample_bicubic_evaluate/scale{scale}.tsv")

    rule upsample_table:
        input:
            base=expand(out("metrics/scale{scale}.json"), scale=UP_SCALES),
            upsampled=expand(out("upsample/metrics/scale{scale}.json"), scale=UP_SCALES),
            interpolated=expand(
                out("upsample/bicubic_metrics/scale{scale}.json"), scale=UP_SCALES
            ),
        output:
            csv=report(
                out("upsample/upsample_table.csv"),
                caption="../report/upsample_table.rst",
                category="Upsampling",
            ),
            md=out("upsample/upsample_table.md"),
        log:
            logfile("upsample/table.log"),
        conda:
            "../envs/torch.yaml"
        params:
            arrangement=upsample.arrangement(config),
        script:
            "../scripts/upsample_table.py"

    rule upsample_grid:
        input:
            out("upsample/samples/scale{scale}.npz"),
        output:
            out("upsample/grids/scale{scale}.png"),
        log:
            logfile("upsample/grids/scale{scale}.log"),
        conda:
            "../envs/torch.yaml"
        params:
            num_images=config["grids"]["num_images"],
            columns=config["grids"]["columns"],
        script:
            "../scripts/sample_grid.py"

    rule lowres_grid:
        input:
            out("upsample/lowres/scale{scale}.npz"),
        output:
            out("upsample/grids/lowres_scale{scale}.png"),
        log:
            logfile("upsample/grids/lowres_scale{scale}.log"),
        conda:
            "../envs/torch.yaml"
        params:
            num_images=config["grids"]["num_images"],
            columns=config["grids"]["columns"],
        script:
            "../scripts/sample_grid.py"
