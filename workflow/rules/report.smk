# Table 1, trend plots, sample grids and the self-contained report.html (adm/report, torch-free).


rule resolved_config:
    output:
        out("config.yaml"),
    log:
        logfile("resolved_config.log"),
    conda:
        "../envs/torch.yaml"
    params:
        config=config,  # a changed config rewrites the file (Snakemake's params trigger)
    script:
        "../scripts/resolved_config.py"


rule table1:
    input:
        metrics=expand(out("metrics/scale{scale}.json"), scale=SCALES),
        fd_dinov2=commands.fd_dinov2_metrics(config, SCALES),
    output:
        csv=report(
            out("table1.csv"), caption="../report/table1.rst", category="Table 1"
        ),
        md=report(out("table1.md"), caption="../report/table1.rst", category="Table 1"),
        tex=out("table1.tex"),
    log:
        logfile("table1.log"),
    conda:
        "../envs/torch.yaml"
    params:
        compare_paper=IMAGENET and config["image_size"] == 128,
    script:
        "../scripts/table1.py"


rule trend_plots:
    input:
        expand(out("metrics/scale{scale}.json"), scale=SCALES),
    output:
        report(
            expand(
                out("plots/{name}.{ext}"),
                name=targets.TREND_PLOTS,
                ext=["png", "svg"],
            ),
            caption="../report/plots.rst",
            category="Metrics vs scale",
        ),
    log:
        logfile("trend_plots.log"),
    conda:
        "../envs/torch.yaml"
    params:
        compare_paper=IMAGENET and config["image_size"] == 128,
        out_dir=subpath(output[0], parent=True),
    script:
        "../scripts/trend_plots.py"


rule sample_grid:
    input:
        out("samples/scale{scale}.npz"),
    output:
        report(
            out("grids/scale{scale}.png"),
            caption="../report/grid.rst",
            category="Samples",
            labels={"scale": "{scale}"},
        ),
    log:
        logfile("grids/scale{scale}.log"),
    conda:
        "../envs/torch.yaml"
    params:
        num_images=config["grids"]["num_images"],
        columns=config["grids"]["columns"],
    script:
        "../scripts/sample_grid.py"


rule report_html:
    input:
        unpack(partial(commands.training_logs, config)),
        unpack(partial(arms.comparison_report_inputs, config)),
        unpack(partial(interval_search.report_inputs, config)),
        unpack(partial(upsample.report_inputs, config)),
        unpack(partial(published.report_inputs, config)),
        metrics=expand(out("metrics/scale{scale}.json"), scale=SCALES),
        fd_dinov2=commands.fd_dinov2_metrics(config, SCALES),
        table=out("table1.csv"),
        plots=expand(
            out("plots/{name}.png"),
            name=targets.TREND_PLOTS,
        ),
        grids=expand(out("grids/scale{scale}.png"), scale=SCALES),
    output:
        report(out("report.html"), caption="../report/report.rst", category="Report"),
    log:
        logfile("report_html.log"),
    conda:
        "../envs/torch.yaml"
    params:
        compare_paper=IMAGENET and config["image_size"] == 128,
        config=config,
        bench_dir=out("benchmarks"),
        gpus_per_rule=slurm.gpus_per_rule(config),
        on_gpu=config["device"] == "cuda",
        title=f"ADM classifier guidance, run '{RUN}' ({config['dataset']} {config['image_size']}x{config['image_size']})",
    script:
        "../scripts/report_html.py"


rule publish_report:
    input:
        out("report.html"),
    output:
        "results/report.html",
    log:
        logfile("publish_report.log"),
    conda:
        "../envs/torch.yaml"
    shell:
        "exec cp -- {input:q} {output:q} 2> {log:q}"
