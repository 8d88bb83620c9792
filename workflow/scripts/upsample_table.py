# Unpack the rule and call adm.report.upsample_table.write_upsample_table (testable without Snakemake).
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # repo root, also under --use-conda
sys.stderr = open(snakemake.log[0], "w")

from adm.fileio import one_line_os_errors  # noqa: E402
from adm.report.table import load_metrics  # noqa: E402
from adm.report.upsample_table import Arrangement, write_upsample_table  # noqa: E402

with one_line_os_errors():  # a full disk or unreadable input: one line in the log, exit 1
    write_upsample_table(
        load_metrics(snakemake.input.base),
        load_metrics(snakemake.input.upsampled),
        Arrangement(**snakemake.params.arrangement),
        snakemake.output.csv,
        snakemake.output.md,
        interpolated=load_metrics(snakemake.input.interpolated),
    )
