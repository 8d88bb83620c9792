# Unpack the rule and call adm.report.frontier (testable without Snakemake).
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # repo root, also under --use-conda
sys.stderr = open(snakemake.log[0], "w")

from adm.report.frontier import write_frontier, write_frontier_plots  # noqa: E402

rows = write_frontier(list(snakemake.params.entries), snakemake.output.csv, snakemake.output.md)
write_frontier_plots(rows, Path(snakemake.output.plots[0]).parent)  # the plots/ folder of the outputs
