# Unpack the rule and call adm.programs.upsample.interpolate_npz (the interpolation baseline of the stage).
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # repo root, also under --use-conda
sys.stderr = open(snakemake.log[0], "w")

from adm.fileio import one_line_os_errors  # noqa: E402
from adm.programs.upsample import interpolate_npz  # noqa: E402

with one_line_os_errors():  # a full disk or unreadable input: one line in the log, exit 1
    interpolate_npz(snakemake.input[0], snakemake.output[0], snakemake.params.size, snakemake.params.mode)
