"""Training: the diffusion, classifier and upsampler loops, their configs and presets, random
draws, EMA and resumable state, the CSV log and torchrun helpers."""
