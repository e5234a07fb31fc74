"""A tiny, randomly initialised chat model, made locally with no download.

For tests and smoke checks of the RL path only (it writes nonsense): a byte-level BPE
tokenizer trained on a few strings, wrapped in ``PreTrainedTokenizerFast`` with a chat
template, and a two-layer Llama with 64-dimensional heads (a shape vLLM also serves).
``python -m evoengine.rl.tiny_model DIR`` writes one to ``DIR``.
"""

from __future__ import annotations

import sys
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}"
    "<|end|>\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
SPECIAL_TOKENS = ["<|endoftext|>", "<|pad|>", "<|end|>", "<|system|>", "<|user|>",
                  "<|assistant|>"]
DEFAULT_TEXTS = [
    "def priority(item, bins):\n    return -(bins - item)\n",
    "<<<<<<< SEARCH\n=======\n>>>>>>> REPLACE\n```python\n# EVOLVE-BLOCK-START\n"
    "# EVOLVE-BLOCK-END\n```",
    "Improve the program. Return the whole EVOLVE-BLOCK. numpy np.log np.sqrt max min",
]


def build_tiny_model(folder: Path, texts: list[str] | None = None, *, hidden: int = 64,
                     layers: int = 2, seed: int = 0) -> Path:
    """Write a tokenizer and a random Llama model to ``folder``; return it."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([*DEFAULT_TEXTS, *(texts or [])], vocab_size=512,
                            min_frequency=1, special_tokens=SPECIAL_TOKENS)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, bos_token="<|endoftext|>", eos_token="<|end|>",
        pad_token="<|pad|>", unk_token="<|endoftext|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=layers, num_attention_heads=hidden // 64 or 1,
        num_key_value_heads=hidden // 64 or 1, head_dim=64 if hidden >= 64 else hidden,
        max_position_embeddings=8192, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    return folder


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m evoengine.rl.tiny_model DIR")
    print(build_tiny_model(Path(sys.argv[1])))
