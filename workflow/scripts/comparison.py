# Unpack the rule and call adm.report.compare.write_comparison (testable without Snakemake).
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # repo root, also under --use-conda
sys.stderr = open(snakemake.log[0], "w")

from adm.fileio import one_line_os_errors  # noqa: E402
from adm.report.compare import write_comparison  # noqa: E402

with one_line_os_errors():  # a full disk or unreadable input: one line in the log, exit 1
    write_comparison(list(snakemake.params.entries), snakemake.output.csv, snakemake.output.md)
