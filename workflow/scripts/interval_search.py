# Unpack the rule: stage "hi" writes stage 1's points and choice; stage "lo" adds stage 2's, chooses the
# interval and writes the table, the heatmap and chosen.yaml (adm.report.interval_search).
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # repo root, also under --use-conda
sys.stderr = open(snakemake.log[0], "w")

from adm.report import interval_search as search  # noqa: E402

params = snakemake.params
if params.stage == "hi":
    points = search.load_points(params.entries)
    doc = {"points": points, "chosen": search.choose_hi(points)}
    Path(snakemake.output[0]).write_text(json.dumps(doc, indent=1) + "\n")
else:
    stage_hi = json.loads(Path(snakemake.input.stage_hi).read_text())["points"]
    stage_lo = search.load_points(params.entries)
    chosen = search.choose_interval(stage_hi, stage_lo) | {"num_samples": params.num_samples}
    points = stage_hi + stage_lo
    search.write_table(points, chosen, snakemake.output.csv, snakemake.output.md)
    search.write_heatmap(points, chosen, snakemake.output.heatmap)
    search.write_chosen(
        chosen, search.chosen_arm(chosen, params.base, params.name, params.scales), snakemake.output.chosen
    )
