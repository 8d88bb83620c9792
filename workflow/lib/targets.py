"""What `rule all` asks for."""

from __future__ import annotations

from workflow.lib import arms, upsample
from workflow.lib.paths import out, scale_names, shard_ids


def sample_shards(config: dict) -> list[str]:
    """Every shard of the Table 1 sweep, scale by scale."""
    sampling = config["sampling"]
    return [
        out(config, f"samples/scale{s}/shard{k}.npz")
        for s in scale_names(sampling["scales"])
        for k in shard_ids(sampling["num_shards"])
    ]


def final_targets(config: dict) -> list[str]:
    """The report, plus every shard: Snakemake does not remake a missing intermediate file whose
    consumers are up to date, so naming the shards makes a deleted shard re-run (and, through
    its merge, that scale's evaluation and the report)."""
    return [
        out(config, "table1.md"),
        out(config, "config.yaml"),  # the resolved config, beside the results
        out(config, "report.html"),
        "results/report.html",
        *sample_shards(config),
        *arms.arm_targets(config),  # guidance arms and seed sets; none when they are off
        *upsample.targets(config),  # the upsampling stage; none when it is off
    ]
