"""The cost-quality frontier, the helpers of workflow/rules/frontier.smk: a solver x steps
grid at chosen classifier-guidance scales, plus a gold row, each point sampled, merged and
evaluated by the Table 1 rules' own commands (per-sample seeds from sampling.seed, the same shards,
the feature cache) into

    results/<run>/frontier/<solver>/steps<K>/{samples,metrics}/scale<s>...

then frontier.{csv,md} and plots/frontier_{nfe,seconds}.{png,svg} (adm.report.frontier). A point
whose setting IS the Table 1 sweep's (sampling.sampler and sampling.steps at a scale of
sampling.scales) is never re-made: its Table 1 files and benchmarks are read, so the paper
config's gold row (DDPM 250, the sweep itself) costs nothing extra. Named target `frontier`,
never part of `rule all`; with frontier.enabled false no rule of it exists.
"""

from __future__ import annotations

from workflow.lib.commands import flag_values, preset_flags
from workflow.lib.paths import benchfile, out, scale_names, shard_ids

SOLVERS = ("ddpm", "ddim", "dpmpp-2m", "dpmpp-3m", "dpmpp-2m-sde")
# the schema's defaults, for a dict that did not pass through it (the library's own tests)
DEFAULTS = {
    "enabled": False,
    "solvers": ["ddim", "dpmpp-2m", "dpmpp-3m"],
    "steps": [10, 15, 20, 25, 50],
    "scales": [0.5, 1.0],
    "step_schedule": "uniform",
}


def settings(config: dict) -> dict:
    return {**DEFAULTS, **(config.get("frontier") or {})}


def on(config: dict) -> bool:
    return bool(settings(config)["enabled"])


def gold(config: dict) -> tuple[str, int]:
    """(sampler, steps) of the gold row: frontier.gold, each key unset = the Table 1 sweep's."""
    given = settings(config).get("gold") or {}
    sampling = config["sampling"]
    return given.get("sampler", sampling["sampler"]), int(given.get("steps", sampling["steps"]))


def points(config: dict) -> list[tuple[str, int, str, bool]]:
    """Every (solver, steps, scale name, is gold) of the frontier, scale by scale, the gold row
    first; a grid point equal to the gold row is the gold row (made once)."""
    s = settings(config)
    g = gold(config)
    runs = []
    for scale in scale_names(s["scales"]):
        runs.append((*g, scale, True))
        runs += [(v, int(k), scale, False) for v in s["solvers"] for k in s["steps"] if (v, int(k)) != g]
    return runs


def is_table1(config: dict, solver: str, steps: int, scale: str) -> bool:
    """The Table 1 sweep's own setting at one of its scales (a solver only with time-uniform
    nodes: the sweep passes no --step-schedule)."""
    sampling = config["sampling"]
    same = solver == sampling["sampler"] and int(steps) == int(sampling["steps"])
    uniform = not solver.startswith("dpmpp") or settings(config)["step_schedule"] == "uniform"
    return same and uniform and scale in scale_names(sampling["scales"])


def point_file(config: dict, solver: str, steps: int, scale: str, kind: str) -> str:
    """metrics JSON (kind "metrics") or merged npz (kind "samples") of a point."""
    ext = "json" if kind == "metrics" else "npz"
    if is_table1(config, solver, steps, scale):
        return out(config, f"{kind}/scale{scale}.{ext}")
    return out(config, f"frontier/{solver}/steps{steps}/{kind}/scale{scale}.{ext}")


def sample_benchmarks(config: dict, solver: str, steps: int, scale: str) -> list[str]:
    """The benchmark TSVs of a point's sampling jobs (Table 1's for a Table 1 point)."""
    shards = shard_ids(config["sampling"]["num_shards"])
    if is_table1(config, solver, steps, scale):
        return [benchfile(config, f"sample/scale{scale}_shard{k}.tsv") for k in shards]
    return [benchfile(config, f"frontier_sample/{solver}_steps{steps}_scale{scale}_shard{k}.tsv") for k in shards]


def metrics_files(config: dict) -> list[str]:
    return [point_file(config, v, k, s, "metrics") for v, k, s, _ in points(config)]


def benchmark_files(config: dict) -> list[str]:
    return [f for v, k, s, _ in points(config) for f in sample_benchmarks(config, v, k, s)]


def entries(config: dict) -> list[dict]:
    """What adm.report.frontier reads: one entry per point."""
    schedule = settings(config)["step_schedule"]
    return [
        {
            "solver": v,
            "steps": k,
            "step_schedule": schedule,
            "scale": float(s),
            "gold": is_gold,
            "path": point_file(config, v, k, s, "metrics"),
            "benchmarks": sample_benchmarks(config, v, k, s),
        }
        for v, k, s, is_gold in points(config)
    ]


def tables(config: dict) -> list[str]:
    return [out(config, "frontier.csv"), out(config, "frontier.md")]


def plots(config: dict) -> list[str]:
    return [out(config, f"plots/frontier_{x}.{ext}") for x in ("nfe", "seconds") for ext in ("png", "svg")]


def targets(config: dict) -> list[str]:
    """The named target's inputs: the tables, the plots and every frontier shard (a deleted one
    re-runs its descendants, as targets.final_targets explains); nothing when off."""
    if not on(config):
        return []
    shards = [
        out(config, f"frontier/{v}/steps{k}/samples/scale{s}/shard{i}.npz")
        for v, k, s, _ in points(config)
        if not is_table1(config, v, k, s)
        for i in shard_ids(config["sampling"]["num_shards"])
    ]
    return [*tables(config), *plots(config), *shards]


# ---------------------------------------------------------------- the sampling command of a point


def respacing(wildcards) -> str:
    """`adm sample --respacing`: "ddimK" for DDIM, "K" for DDPM and the solvers."""
    return f"ddim{wildcards.steps}" if wildcards.solver == "ddim" else str(wildcards.steps)


def sampler_flags(config: dict, wildcards) -> list[str]:
    """As commands.sampler_flags for the Table 1 sweep (presets, --fast), then the point's solver:
    `--sampler dpmpp-2m --step-schedule S` (ddpm/ddim follow from the respacing spec)."""
    mode = config["sampling"]["fast"]
    flags = preset_flags(config) + ([] if mode == "exact" else flag_values("--fast", mode))
    if wildcards.solver.startswith("dpmpp"):
        flags += flag_values("--sampler", wildcards.solver)
        flags += flag_values("--step-schedule", settings(config)["step_schedule"])
    return flags
