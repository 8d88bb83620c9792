# Unpack the rule and write the resolved config beside the results (adm.report.runinfo.config_yaml).
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # repo root, also under --use-conda
sys.stderr = open(snakemake.log[0], "w")

from adm.fileio import atomic_write, one_line_os_errors  # noqa: E402
from adm.report.runinfo import config_yaml  # noqa: E402

with one_line_os_errors():  # a full disk or unreadable input: one line in the log, exit 1
    text = config_yaml(dict(snakemake.params.config))
    atomic_write(snakemake.output[0], lambda f: f.write(text), binary=False)
