# The cost-quality frontier: a solver x steps grid at chosen guidance scales plus a gold
# row, each point sampled, merged and evaluated by the Table 1 rules' own commands (use rule ...
# with:), then frontier.{csv,md} and the frontier plots. Named target, never in `rule all`:
# `snakemake --cores all frontier`. Points, paths and flags: workflow/lib/frontier.py.


if frontier.on(config):

    localrules:
        frontier_report,
        frontier,

    wildcard_constraints:
        solver="|".join(frontier.SOLVERS),
        steps=r"\d+",

    use rule sample as frontier_sample with:
        output:
            out("frontier/{solver}/steps{steps}/samples/scale{scale}/shard{shard}.npz"),
        log:
            logfile(
                "frontier/{solver}_steps{steps}/sample/scale{scale}_shard{shard}.log"
            ),
        benchmark:
            benchfile(
                "frontier_sample/{solver}_steps{steps}_scale{scale}_shard{shard}.tsv"
            )
        params:
            respacing=frontier.respacing,
            presets=partial(frontier.sampler_flags, config),

    use rule merge_shards as frontier_merge with:
        input:
            expand(
                out(
                    "frontier/{{solver}}/steps{{steps}}/samples/scale{{scale}}/shard{shard}.npz"
                ),
                shard=SHARDS,
            ),
        output:
            out("frontier/{solver}/steps{steps}/samples/scale{scale}.npz"),
        log:
            logfile("frontier/{solver}_steps{steps}/merge/scale{scale}.log"),
        benchmark:
            benchfile("frontier_merge/{solver}_steps{steps}_scale{scale}.tsv")

    use rule evaluate as frontier_evaluate with:
        input:
            unpack(partial(commands.evaluator_inputs, config)),
            ref=out("reference/ref.npz"),
            samples=out("frontier/{solver}/steps{steps}/samples/scale{scale}.npz"),
        output:
            out("frontier/{solver}/steps{steps}/metrics/scale{scale}.json"),
        log:
            logfile("frontier/{solver}_steps{steps}/evaluate/scale{scale}.log"),
        benchmark:
            benchfile("frontier_evaluate/{solver}_steps{steps}_scale{scale}.tsv")

    # The sampling jobs' benchmark files are inputs: the seconds axis and the time ratios read them.
    rule frontier_report:
        input:
            metrics=frontier.metrics_files(config),
            benchmarks=frontier.benchmark_files(config),
        output:
            csv=report(
                out("frontier.csv"),
                caption="../report/frontier.rst",
                category="Cost-quality frontier",
            ),
            md=report(
                out("frontier.md"),
                caption="../report/frontier.rst",
                category="Cost-quality frontier",
            ),
            plots=report(
                frontier.plots(config),
                caption="../report/frontier.rst",
                category="Cost-quality frontier",
            ),
        log:
            logfile("frontier/report.log"),
        conda:
            "../envs/torch.yaml"
        params:
            entries=frontier.entries(config),
        script:
            "../scripts/frontier_report.py"

    rule frontier:
        input:
            frontier.targets(config),
