# Unpack the rule and call adm.report.plots.write_trend_plots.
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # repo root, also under --use-conda
sys.stderr = open(snakemake.log[0], "w")

from adm.fileio import one_line_os_errors  # noqa: E402
from adm.report.plots import write_trend_plots  # noqa: E402
from adm.report.table import load_metrics  # noqa: E402

with one_line_os_errors():  # a full disk or unreadable input: one line in the log, exit 1
    write_trend_plots(load_metrics(snakemake.input), snakemake.params.out_dir, snakemake.params.compare_paper)
