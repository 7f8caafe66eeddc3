"""``finetune.launcher=slurm``: (in progress)."""
