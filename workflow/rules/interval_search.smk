# The guidance-interval search (Kynkäänniemi et al. 2024): `snakemake interval_search`.
# Stage 1 (sigma_hi with sigma_lo = 0) and stage 2 (sigma_lo below stage 1's sigma_hi) are arms of
# arms.smk with generated names (isearch_hi<k>, isearch_lo<j>_hi<k>); the checkpoint below picks
# sigma_hi, and only then are stage 2's runs known. Helpers: workflow/lib/interval_search.py.
from workflow.lib import interval_search as isearch


localrules:
    interval_search_hi,
    interval_search,


# stage 1's entries: {stage, lo, hi, scale, path} per (sigma_hi candidate, scale)
STAGE_HI = isearch.stage_hi_entries(config, arms.searched_arm(config))
# stage 2's, known once the checkpoint has chosen sigma_hi
STAGE_LO = lambda wildcards: isearch.stage_lo_after(
    config, arms.searched_arm(config), checkpoints.interval_search_hi.get().output[0]
)


checkpoint interval_search_hi:
    input:
        [e["path"] for e in STAGE_HI],
    output:
        out("interval_search/stage_hi.json"),
    log:
        logfile("interval_search/stage_hi.log"),
    conda:
        "../envs/torch.yaml"
    params:
        stage="hi",
        entries=STAGE_HI,
    script:
        "../scripts/interval_search.py"


rule interval_search:
    input:
        stage_hi=out("interval_search/stage_hi.json"),
        stage_lo=lambda wildcards: [e["path"] for e in STAGE_LO(wildcards)],
    output:
        **isearch.outputs(config),
    log:
        logfile("interval_search/stage_lo.log"),
    conda:
        "../envs/torch.yaml"
    params:
        stage="lo",
        entries=STAGE_LO,
        base=arms.searched_arm(config),
        scales=isearch.settings(config)["scales"],
        name=f"{isearch.settings(config)['arm']}_searched",
        num_samples=isearch.settings(config)["num_samples"],
    script:
        "../scripts/interval_search.py"
