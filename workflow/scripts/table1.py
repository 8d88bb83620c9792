# Unpack the rule and call adm.report.table.write_table1 (testable without Snakemake).
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # repo root, also under --use-conda
sys.stderr = open(snakemake.log[0], "w")

from adm.fileio import one_line_os_errors  # noqa: E402
from adm.report.table import add_fd_dinov2, load_metrics, write_table1  # noqa: E402

with one_line_os_errors():  # a full disk or unreadable input: one line in the log, exit 1
    results = add_fd_dinov2(load_metrics(snakemake.input.metrics), snakemake.input.get("fd_dinov2", []))
    write_table1(
        results, snakemake.output.csv, snakemake.output.md, snakemake.output.tex, snakemake.params.compare_paper
    )
