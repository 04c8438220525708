"""Shared set-up for the benchmark scripts: model shapes, prompts of a fixed length, a median timer.

Every model is built from a config (random init, no hub) and saved, then loaded back by path, the
same way a user's ``model="gpt2"`` is loaded.
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import transformers
from transformers import GPT2Config, GPT2LMHeadModel

import lm_gym

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
transformers.utils.logging.disable_progress_bar()

SHAPES = {
    "tiny": None,  # the bundled LM: 2 layers x 64, vocabulary 512
    "tiny-1k": dict(n_layer=2, n_embd=64, n_head=4, vocab_size=512),  # the bundled shape, 1024 positions
    "gpt2-small": dict(n_layer=12, n_embd=768, n_head=12, vocab_size=50257),  # 124M parameters
}


def add_shape_arguments(parser) -> None:
    """The arguments every rollout/update benchmark takes: model shape, batch, lengths, repeats."""
    parser.add_argument("--shape", default="tiny", choices=sorted(SHAPES))
    parser.add_argument("--n-envs", type=int, default=8)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)


def model_path(shape: str) -> str:
    """A directory holding the LM of this shape and the bundled tokenizer."""
    if SHAPES[shape] is None:
        return str(lm_gym.DEFAULT_MODEL)
    path = Path(tempfile.gettempdir()) / f"lm-gym-bench-{shape}"
    if not (path / "model.safetensors").exists():
        tokenizer = lm_gym.load_tokenizer()
        torch.manual_seed(0)
        config = GPT2Config(n_positions=1024, eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id,
                            **SHAPES[shape])
        GPT2LMHeadModel(config).save_pretrained(path)
        tokenizer.save_pretrained(path)
    return str(path)


def prompts_of_length(n_tokens: int, count: int = 8) -> list[str]:
    """``count`` distinct prompts of exactly ``n_tokens`` bundled-tokenizer tokens."""
    tokenizer = lm_gym.load_tokenizer()
    words = " ".join(p.text for p in lm_gym.load_prompts()).split()
    prompts = []
    for start in range(count):
        ids = tokenizer(" ".join(words[start:] + words[:start]), add_special_tokens=False)["input_ids"][:n_tokens]
        text = tokenizer.decode(ids)
        assert len(tokenizer(text, add_special_tokens=False)["input_ids"]) == n_tokens
        prompts.append(text)
    return prompts


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        synchronize()
        start = time.perf_counter()
        fn()
        synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def machine() -> str:
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    import stable_baselines3

    return (f"{name}; {platform.python_implementation()} {platform.python_version()}, torch {torch.__version__}, "
            f"transformers {transformers.__version__}, stable-baselines3 {stable_baselines3.__version__}")
