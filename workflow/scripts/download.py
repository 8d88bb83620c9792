# Fetch one released file (checkpoint or reference batch) with evaluations.download: resumable,
# sha256 recorded beside it. Imports neither torch nor tensorflow.
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # repo root, also under --use-conda
sys.stderr = open(snakemake.log[0], "w")

from evaluations.download import download  # noqa: E402

target = Path(snakemake.output[0])
download(snakemake.params.url, cache_dir=target.parent, filename=target.name)
