"""Datasets: npz image arrays, the embedded digits, image folders, on-disk (memory-mapped) arrays.
Numpy/PIL only: no torch at import."""
