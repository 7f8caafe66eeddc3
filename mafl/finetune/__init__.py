"""Fine-tuning: the sets cut from debate transcripts (``sets``) and the trl trainer of one model (``trainer``).
torch/transformers/peft/trl are imported only when a model is fine-tuned."""
from mafl.finetune.sets import (
    Example,
    FinetuneSet,
    build_critic_set,
    build_generator_set,
    build_society_sets,
    critic_mix_sizes,
    merge_sets,
)
from mafl.finetune.finetune_one import FinetuneResult, build_trainer, finetune_model

__all__ = [
    "Example",
    "FinetuneResult",
    "FinetuneSet",
    "build_critic_set",
    "build_generator_set",
    "build_society_sets",
    "build_trainer",
    "critic_mix_sizes",
    "finetune_model",
    "merge_sets",
]
