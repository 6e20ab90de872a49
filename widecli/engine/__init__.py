"""Training: the epoch loop, its steps, evaluation, checkpoints and torch.distributed helpers."""
