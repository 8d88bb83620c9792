"""The workflow's Python, importable and torch-free: config checks, paths and targets, program
arguments, guidance arms, the upsampling stage and SLURM resources. Every function takes the config
dict (and whatever else it needs) as arguments, so tests call them without Snakemake; the rule files
bind them to the run's config (workflow/rules/common.smk)."""
