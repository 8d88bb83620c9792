"""What `rule all` asks for: the report and every file the run keeps.

Snakemake does not remake a missing intermediate file whose consumers are up to date, so a
deleted shard, merged sample file, metrics JSON or grid would leave the folder incomplete with
"Nothing to be done". Naming them here makes the next run remake a deleted one (and, through
mtimes, whatever reads it). Every file named is already an input of a job a fresh run does, so a
fresh run's job list is the same with or without them.
"""

from __future__ import annotations

from workflow.lib import arms, published, upsample
from workflow.lib.paths import out, scale_names, shard_ids

# adm.report.plots.PLOTS' names (not imported: matplotlib at DAG-parse time); report.smk uses these
TREND_PLOTS = ["fid_sfid", "inception_score", "precision_recall"]


def sample_shards(config: dict) -> list[str]:
    """Every shard of the Table 1 sweep, scale by scale."""
    sampling = config["sampling"]
    return [
        out(config, f"samples/scale{s}/shard{k}.npz")
        for s in scale_names(sampling["scales"])
        for k in shard_ids(sampling["num_shards"])
    ]


def table1_intermediates(config: dict) -> list[str]:
    """Per scale the merged samples, their metrics JSON and grid; the table's other formats; the
    trend plots."""
    per_scale = [
        out(config, f"{kind}/scale{s}.{ext}")
        for s in scale_names(config["sampling"]["scales"])
        for kind, ext in (("samples", "npz"), ("metrics", "json"), ("grids", "png"))
    ]
    plots = [out(config, f"plots/{name}.{ext}") for name in TREND_PLOTS for ext in ("png", "svg")]
    return [*per_scale, out(config, "table1.csv"), out(config, "table1.tex"), *plots]


def final_targets(config: dict) -> list[str]:
    """The report and the tables, then every shard and intermediate file (see the module docstring;
    a deleted shard re-runs its merge, that scale's evaluation and the report)."""
    named = [
        out(config, "table1.md"),
        out(config, "config.yaml"),  # the resolved config, beside the results
        out(config, "report.html"),
        "results/report.html",
        *sample_shards(config),
        *table1_intermediates(config),
        *arms.arm_targets(config),  # guidance arms and seed sets; none when they are off
        *upsample.targets(config),  # the upsampling stage; none when it is off
        *published.targets(config),  # the published-samples check, when published.in_report
    ]
    return list(dict.fromkeys(named))  # the arms' first-seed files are Table 1's own
