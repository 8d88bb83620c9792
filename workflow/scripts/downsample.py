# Unpack the rule and call adm.training.upsampler.downsample_npz (area, as the upsampler was trained).
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # repo root, also under --use-conda
sys.stderr = open(snakemake.log[0], "w")

from adm.fileio import one_line_os_errors  # noqa: E402
from adm.training.upsampler import downsample_npz  # noqa: E402

with one_line_os_errors():  # a full disk or unreadable input: one line in the log, exit 1
    downsample_npz(snakemake.input[0], snakemake.output[0], snakemake.params.size)
