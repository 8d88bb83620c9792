# The evaluator checked against OpenAI's published sample batches: download each selected batch
# and its reference batch, evaluate with the sweep's own evaluation rule, and compare with every
# published value (published.{md,csv}; a batch that matches none of its sources fails the job).
# Named target: `snakemake --cores all published --configfile config/imagenet128.yaml`.


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

    rule published_table:
        input:
            published.metrics_files(config),
        output:
            md=out("published.md"),
            csv=out("published.csv"),
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
