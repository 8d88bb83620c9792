# Unpack the rule and call adm.report.grids.write_grid.
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # repo root, also under --use-conda
sys.stderr = open(snakemake.log[0], "w")

from adm.fileio import one_line_os_errors  # noqa: E402
from adm.report.grids import write_grid  # noqa: E402

with one_line_os_errors():  # a full disk or unreadable input: one line in the log, exit 1
    write_grid(snakemake.input[0], snakemake.output[0], snakemake.params.num_images, snakemake.params.columns)
