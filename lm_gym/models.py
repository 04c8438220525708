"""Loading tokenizers and causal LMs by Hugging Face name or local path, and the bundled offline default."""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig, PreTrainedModel, \
    PreTrainedTokenizerBase

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
DEFAULT_MODEL = ASSETS_DIR / "tiny-lm"
"""The bundled tiny GPT-2 (built by ``scripts/build_default_lm.py``); used wherever ``model=None``."""

ModelRef = str | os.PathLike | None


def resolve_model(model: ModelRef) -> str:
    """The name or path that ``from_pretrained`` gets: ``None`` means the bundled default."""
    return str(DEFAULT_MODEL if model is None else model)


def looks_like_path(name: str) -> bool:
    """True for a reference that can only be a local path: a hub id is ``name`` or ``owner/name``."""
    return os.path.isabs(name) or name.startswith((".", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name


def check_model(model: ModelRef) -> str:
    """``resolve_model(model)``, refused with the fix when it names a local path that does not exist."""
    name = resolve_model(model)
    if looks_like_path(name) and not Path(name).expanduser().exists():
        raise ValueError(f"model={name!r}: no such directory. Give a directory written by save_pretrained (a run's "
                         "lm/ works) or a Hugging Face repo id such as 'gpt2'.")
    return name


def load_tokenizer(model: ModelRef = None) -> PreTrainedTokenizerBase:
    """Load a tokenizer and make sure it can pad.

    A tokenizer without a pad token (GPT-2's, for one) gets its EOS token as pad token: padding is
    always masked out, so the id only has to be valid. One with neither is refused with the fix.
    """
    name = check_model(model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
    except OSError as error:  # Hugging Face's "not a valid model identifier", no network, gated repo...
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"model={name!r}: could not load its tokenizer ({first_line}). Give a directory written by "
                         "save_pretrained or a Hugging Face repo id that this machine can download.") from error
    ensure_pad_token(tokenizer, source=resolve_model(model))
    return tokenizer


def max_positions(model: ModelRef) -> int | None:
    """How many positions ``model`` can attend to, from its config alone (no weights load); None when its config
    does not say (or cannot be read)."""
    try:
        config = AutoConfig.from_pretrained(check_model(model))
    except (OSError, ValueError):
        return None
    positions = getattr(config, "max_position_embeddings", None)
    return positions if isinstance(positions, int) and positions > 0 else None


def tokenizer_for(model: ModelRef, tokenizer: PreTrainedTokenizerBase | None) -> PreTrainedTokenizerBase:
    """``tokenizer`` when the caller has one (made able to pad), else ``model``'s, loaded."""
    if tokenizer is None:
        return load_tokenizer(model)
    ensure_pad_token(tokenizer)
    return tokenizer


def ensure_pad_token(tokenizer: PreTrainedTokenizerBase, source: str = "the tokenizer") -> None:
    if tokenizer.pad_token_id is not None:
        return
    if tokenizer.eos_token_id is None:
        raise ValueError(
            f"model={source!r}: the tokenizer has neither a pad token nor an EOS token. Add one and pass it "
            "in, e.g. tokenizer.add_special_tokens({'pad_token': '<pad>'}); TextGenEnv(tokenizer=tokenizer)."
        )
    tokenizer.pad_token = tokenizer.eos_token


def start_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The special tokens the tokenizer puts at the start of a sequence (Llama's, Mistral's, Gemma's BOS), [] for
    tokenizers that add none (GPT-2's, Qwen2's).

    Read from the tokenizer itself: the ids that ``tokenizer(text)`` puts before ``tokenizer(text,
    add_special_tokens=False)``. The envs encode every text piece without special tokens (so that nothing is
    added in the middle of a sequence, or at its end) and put these in front of the prompt: the LM then starts
    from the context it was trained on.
    """
    probe = "Hello"
    plain = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start:start + len(plain)] == plain:
            return list(full[:start])
    return []


def load_causal_lm(
    model: ModelRef = None,
    *,
    dtype: torch.dtype | str | None = None,
    attn_implementation: str | None = None,
) -> PreTrainedModel:
    """Load ``AutoModelForCausalLM`` with every dropout set to zero.

    RL needs a deterministic forward: SB3 switches the policy between train and eval mode, and dropout
    would make the PPO ratio differ from 1 before any update.
    """
    name = check_model(model)
    kwargs = {} if attn_implementation is None else {"attn_implementation": attn_implementation}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*loss_type=None.*")
        lm = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, **kwargs)
    disable_dropout(lm)
    return lm


def load_frozen_lm(model: ModelRef, device: torch.device | str, **kwargs) -> PreTrainedModel:
    """:func:`load_causal_lm` in eval mode without gradients, on ``device``: a KL reference."""
    return load_causal_lm(model, **kwargs).to(device).eval().requires_grad_(False)


def disable_dropout(module: torch.nn.Module) -> None:
    config = getattr(module, "config", None)
    if config is not None:
        for key, value in vars(config).items():
            if isinstance(value, float) and ("dropout" in key or "pdrop" in key):
                setattr(config, key, 0.0)
    for sub in module.modules():
        if isinstance(sub, torch.nn.Dropout):
            sub.p = 0.0


def save_pretrained(lm: PreTrainedModel, model: ModelRef, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Save ``lm`` with the tokenizer of ``model`` in Hugging Face format (``from_pretrained``, ``pipeline``).

    Refuses a non-empty directory unless ``overwrite=True``, so nothing saved earlier is lost.
    The saved ``generation_config`` samples as the policy does, from the full softmax (``do_sample=True``,
    ``top_k=0``: transformers would otherwise decode greedily, or cut to its default top 50 when sampling), so
    ``pipeline("text-generation", path)`` behaves like the trained policy.
    """
    path = Path(path)
    if path.exists() and any(path.iterdir()) and not overwrite:
        raise FileExistsError(f"{path} is not empty; choose a new directory or pass overwrite=True.")
    tokenizer = load_tokenizer(model)
    lm.generation_config = policy_sampling(lm.generation_config, tokenizer)
    lm.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def policy_sampling(generation: GenerationConfig, tokenizer: PreTrainedTokenizerBase) -> GenerationConfig:
    """A copy of ``generation`` that samples the way lm-gym's policies do: the plain softmax, no top-k/top-p."""
    generation = copy.deepcopy(generation)
    generation.do_sample, generation.top_k, generation.top_p, generation.temperature = True, 0, 1.0, 1.0
    generation.pad_token_id = tokenizer.pad_token_id
    if generation.eos_token_id is None:
        generation.eos_token_id = tokenizer.eos_token_id
    return generation
