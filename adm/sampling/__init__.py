"""Sampling: pure sampler functions, guidance transforms, per-sample RNG, precision and fast
paths, batch-size probing. Imports adm.diffusion.gaussian and adm.nets."""
