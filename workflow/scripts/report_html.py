# Unpack the rule and call adm.report.html.write_report.
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # repo root, also under --use-conda
sys.stderr = open(snakemake.log[0], "w")

from adm.fileio import one_line_os_errors  # noqa: E402
from adm.report.html import ReportInputs, write_report  # noqa: E402
from adm.report.table import add_fd_dinov2, load_metrics, scale_from_path  # noqa: E402
from adm.report.upsample_table import upsample_files  # noqa: E402

with one_line_os_errors():  # a full disk or unreadable input: one line in the log, exit 1
    inputs = ReportInputs(
        results=add_fd_dinov2(load_metrics(snakemake.input.metrics), snakemake.input.get("fd_dinov2", [])),
        compare_paper=snakemake.params.compare_paper,
        plots=[Path(p) for p in snakemake.input.plots],
        grids={scale_from_path(p): Path(p) for p in snakemake.input.grids},
        config=dict(snakemake.params.config),
        title=snakemake.params.title,
        diffusion_log=snakemake.input.get("diffusion_log"),
        classifier_log=snakemake.input.get("classifier_log"),
        bench_dir=Path(snakemake.params.bench_dir),
        repo=Path(snakemake.scriptdir).parents[1],
        gpus_per_rule=dict(snakemake.params.gpus_per_rule),
        on_gpu=snakemake.params.on_gpu,
        comparison=snakemake.input.get("comparison"),  # guidance arms (arms.smk), when on
        tradeoff_plots=[Path(p) for p in snakemake.input.get("tradeoff", [])],
        upsample=upsample_files(snakemake.input, snakemake.config),  # the upsampling stage, when on
        interval_search={  # the interval search's table, choice and heatmap, when interval_search.in_report
            "table": Path(snakemake.input.interval_search_csv),
            "chosen": Path(snakemake.input.interval_search_chosen),
            "heatmap": Path(snakemake.input.interval_search_heatmap),
        }
        if "interval_search_csv" in snakemake.input.keys()
        else None,
        published=snakemake.input.get("published_csv"),  # the published-samples check, when in_report
    )
    write_report(inputs, snakemake.output[0])
