# Unpack the rule and call adm.report.grids.write_grid.
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # repo root, also under --use-conda
sys.stderr = open(snakemake.log[0], "w")

from adm.report.grids import write_grid  # noqa: E402

write_grid(snakemake.input[0], snakemake.output[0], snakemake.params.num_images, snakemake.params.columns)
