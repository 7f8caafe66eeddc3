"""``finetune.launcher=ray``: (in progress)."""
