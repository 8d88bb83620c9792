# Unpack the rule and call adm.training.upsampler.downsample_npz (area, as the upsampler was trained).
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # repo root, also under --use-conda
sys.stderr = open(snakemake.log[0], "w")

from adm.training.upsampler import downsample_npz  # noqa: E402

downsample_npz(snakemake.input[0], snakemake.output[0], snakemake.params.size)
