# The evaluator checked against OpenAI's published sample batches: download each selected batch
# and its reference batch, evaluate with the sweep's own evaluation rule, and compare with every
# published value (published.{md,csv}; a batch that matches none of its sources fails the job).
# With evaluation.fd_dinov2, each batch's FD_DINOv2 by the rules of fd_dinov2.smk (ours only: no one
# published it). Named target: `snakemake --cores all published --configfile config/imagenet128.yaml`;
# published.in_report adds it to the default run and report.html.


if IMAGENET:

    localrules:
        download_published,
        download_published_reference,
        published,

    rule download_published:
        output:
            out("published/batches/{batch}.npz"),
        log:
            logfile("published/download_{batch}.log"),
        conda:
            "../envs/tensorflow.yaml"
        params:
            url=lambda w: published.batch_url(config, w.batch),
            sha256=lambda w: published.sha256(config, w.batch),
        script:
            "../scripts/download.py"

    rule download_published_reference:
        output:
            out("published/reference/{ref}.npz"),
        log:
            logfile("published/download_reference_{ref}.log"),
        conda:
            "../envs/tensorflow.yaml"
        params:
            url=lambda w: published.reference_url(config, w.ref),
            sha256=lambda w: published.sha256(config, w.ref),
        script:
            "../scripts/download.py"

    use rule evaluate as evaluate_published with:
        input:
            unpack(partial(commands.evaluator_inputs, config)),
            ref=partial(published.reference_path, config),
            samples=out("published/batches/{batch}.npz"),
        output:
            out("published/metrics/{batch}.json"),
        log:
            logfile("published/evaluate_{batch}.log"),
        benchmark:
            benchfile("published/evaluate_{batch}.tsv")

    if config["evaluation"]["fd_dinov2"]:

        # DINOv2 features of a published batch ("batches") or of its reference batch ("reference"):
        # the sweep's features job, weights and feature cache.
        use rule dinov2_features as published_dinov2_features with:
            input:
                images=out("published/{folder}/{stem}.npz"),
                weights=out("dinov2/dinov2_vitl14_pretrain.pth"),
                lock=out("provenance/dinov2.lock"),
            output:
                out("published/dinov2/{folder}/{stem}.npz"),
            log:
                logfile("published/dinov2/{folder}_{stem}.log"),
            benchmark:
                benchfile("published_dinov2/{folder}_{stem}.tsv")
            wildcard_constraints:
                folder="batches|reference",
                stem=r"[A-Za-z0-9_]+",

        use rule fd_dinov2 as published_fd_dinov2 with:
            input:
                ref=partial(published.dinov2_reference_path, config),
                samples=out("published/dinov2/batches/{batch}.npz"),
            output:
                out("published/fd_dinov2/{batch}.json"),
            log:
                logfile("published/fd_dinov2_{batch}.log"),

    rule published_table:
        input:
            metrics=published.metrics_files(config),
            fd_dinov2=published.fd_dinov2_files(config),
        output:
            md=report(
                out("published.md"),
                caption="../report/published.rst",
                category="Published samples",
            ),
            csv=report(
                out("published.csv"),
                caption="../report/published.rst",
                category="Published samples",
            ),
        log:
            logfile("published/table.log"),
        conda:
            "../envs/torch.yaml"
        params:
            batches=published.settings(config)["batches"],
            expected=published.settings(config)["expected"],
            fail=published.settings(config)["fail_on_mismatch"],
        script:
            "../scripts/published_table.py"

    # The table, plus each downloaded batch: a deleted (or replaced) batch is fetched and evaluated
    # again, not skipped because the table is newer.
    rule published:
        input:
            out("published.md"),
            published.batch_files(config),
