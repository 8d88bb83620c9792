# Repository-root entry point: `snakemake --cores all` from the repo root runs the whole benchmark.
# Rules from an `include:` never become the default target, so the default is declared here.


include: "workflow/Snakefile"


rule default:
    default_target: True
    input:
        rules.all.input,
