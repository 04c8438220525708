"""The run layer: `lm-gym train`/`evaluate`/`compare`, their run directories, checkpoints and held-out samples,
for either backend."""
