"""Table 1, trend plots, sample grids and the HTML report (torch-free; no Snakemake needed).

Submodules: `paper` (the paper's Table 1), `table`, `plots`, `grids`, `runinfo`, `html`.
"""
