"""The networks: building blocks, the ADM UNet and noisy classifier, their configs and presets,
the fp16 torso mode and checkpoint I/O. Knows nothing of diffusion. Bottom layer above adm.fileio."""
