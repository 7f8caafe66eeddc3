"""The embedded model's tokenizer, built in code with the `tokenizers` library.

Byte-level BPE (so any text round-trips), trained on a sample of the pretraining corpus; words are not split
apart before the merges, so the fixed prompt phrases of a debate become a few tokens each (shorter sequences
train faster). Every integer 0..999 is one token: a run of digits is cut into pieces of up to three digits
from the left (``1234`` -> ``123`` ``4``; ``0 4 4`` stays three digits), so the operands of an Arithmetic
question stand at fixed token offsets and a product is a one-token look-up.
Wrapped as a transformers fast tokenizer with a chat template, a pad token distinct from eos, and left
padding for batched generation.
"""
from __future__ import annotations

from typing import Iterable

PAD, EOS = "<|pad|>", "<|end|>"
ROLE_TOKENS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
SPECIAL_TOKENS = [PAD, EOS, *ROLE_TOKENS.values()]
NUMBERS = 1000  # "0".."999" are tokens

# Each message is <|role|>content<|end|>; a generation prompt ends with <|assistant|>, and the model's
# answer ends with <|end|> (eos), so generation stops by itself.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def build_tokenizer(corpus: Iterable[str], vocab_size: int = 512):
    """Train a byte-level BPE tokenizer on ``corpus`` (``vocab_size`` tokens), add the number tokens and wrap
    it for transformers (deterministic)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True),
         pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    # matched in the raw text before the BPE, longest first: every digit run becomes number tokens
    tok.add_tokens([AddedToken(str(i), normalized=False) for i in range(NUMBERS)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        eos_token=EOS,
        additional_special_tokens=list(ROLE_TOKENS.values()),
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )


def number_token_ids(tokenizer) -> list[int]:
    """The token ids of "0".."999", in numeric order."""
    return tokenizer.convert_tokens_to_ids([str(n) for n in range(NUMBERS)])
