# Unpack the rule: seed means and spreads per (arm, scale) -> adm.report.tradeoff.write_tradeoff_plots.
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # repo root, also under --use-conda
sys.stderr = open(snakemake.log[0], "w")

from adm.fileio import one_line_os_errors  # noqa: E402
from adm.report.compare import comparison_rows, load_entries, tradeoff_curves  # noqa: E402
from adm.report.tradeoff import write_tradeoff_plots  # noqa: E402

with one_line_os_errors():  # a full disk or unreadable input: one line in the log, exit 1
    curves = tradeoff_curves(comparison_rows(load_entries(snakemake.params.entries)))
    write_tradeoff_plots(curves, snakemake.params.out_dir, snakemake.params.compare_paper)
