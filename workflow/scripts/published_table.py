# Unpack the rule and write published.{md,csv}: our metrics of OpenAI's published sample batches
# beside every published value (adm.report.published). A batch matching none of its sources ends
# the job with one line naming batch, metric, published value and ours.
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # repo root, also under --use-conda
sys.stderr = open(snakemake.log[0], "w")

from adm.fileio import one_line_os_errors  # noqa: E402
from adm.report.published import check_published  # noqa: E402

with one_line_os_errors():  # a full disk or unreadable input: one line in the log, exit 1
    sys.exit(
        check_published(
            snakemake.input.metrics,
            snakemake.params.batches,
            dict(snakemake.params.expected),
            snakemake.params.fail,
            snakemake.output.md,
            snakemake.output.csv,
            snakemake.input.get("fd_dinov2", []),  # each batch's FD_DINOv2 record, when measured
        )
    )
