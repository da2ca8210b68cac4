"""Models that need no hub: tiny random Qwen2 models for tests and notebooks.

A tiny model has random weights and the real multilingual Qwen2 tokenizer (151,936 tokens),
read once from the vocabulary-only ``ggml-vocab-qwen2.gguf`` that ships in the llama.cpp sources
(see :mod:`plug_lite.toolchain`) and saved as a normal tokenizer folder. llama.cpp tokenizes
exactly like transformers with it, so a tiny model exercises the whole pipeline (train, merge,
GGUF, quantize, chat) in about a minute. It cannot show that training helps.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from . import templates
from .io import UserError
from .toolchain import cache_dir, vocab_gguf

__all__ = ["qwen2_tokenizer_dir", "tiny_qwen2"]


def qwen2_tokenizer_dir() -> Path:
    """A saved Qwen2 tokenizer (ChatML template, EOS ``<|im_end|>``), built once from llama.cpp's
    vocabulary GGUF (10-40 s the first time)."""
    dest = cache_dir() / "tokenizers" / "qwen2"
    if (dest / "tokenizer_config.json").exists():
        return dest
    from transformers import AutoTokenizer

    src = vocab_gguf("ggml-vocab-qwen2.gguf")
    tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    tok.chat_template = templates.CHATML
    tok.eos_token = "<|im_end|>"
    tok.pad_token = "<|endoftext|>"
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tok.save_pretrained(str(tmp))
    if dest.exists():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.replace(tmp, dest)
    return dest


def tiny_qwen2(
    out_dir: str | os.PathLike | None = None,
    *,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int | None = None,
    seed: int = 0,
    tied: bool = True,
) -> Path:
    """Save a random Qwen2 model with the Qwen2 tokenizer; returns its folder (cached by shape).

    ``hidden=256`` gives tensor widths that real k-quants take without fallbacks; ``tied=False``
    gives the model an output head of its own.
    """
    name = f"qwen2-tiny-h{hidden}-l{layers}-a{heads}-kv{kv_heads}-s{seed}"
    if intermediate is not None and intermediate != hidden * 2:
        name += f"-i{intermediate}"  # the cache key must tell shapes apart
    if not tied:
        name += "-untied"
    dest = Path(out_dir) if out_dir else cache_dir() / "models" / name
    if (dest / "config.json").exists() and (dest / "model.safetensors").exists():
        return dest
    if hidden % heads:
        raise UserError(f"tiny model: hidden size {hidden} is not a multiple of {heads} heads")
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tok = AutoTokenizer.from_pretrained(str(qwen2_tokenizer_dir()))
    config = Qwen2Config(
        vocab_size=151936,
        hidden_size=hidden,
        intermediate_size=intermediate or hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=4096,
        tie_word_embeddings=tied,
        bos_token_id=None,
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    model.generation_config.bos_token_id = None
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    tok.save_pretrained(str(tmp))
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    return dest
