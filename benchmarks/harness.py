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
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env
from transformers import GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM

import lm_gym
from agents import EpisodeRolloutBuffer, LMActorCriticPolicy

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
transformers.utils.logging.disable_progress_bar()

SHAPES = {
    "tiny": None,  # the bundled LM: 2 layers x 64, vocabulary 512
    "tiny-1k": dict(n_layer=2, n_embd=64, n_head=4, vocab_size=512),  # the bundled shape, 1024 positions
    "tiny-16k": dict(n_layer=2, n_embd=64, n_head=4, vocab_size=512, n_positions=16_448),  # long episodes
    "gpt2-small": dict(n_layer=12, n_embd=768, n_head=12, vocab_size=50257),  # 124M parameters
    # Qwen2-0.5B's shape (494M parameters: grouped-query attention, 2 KV heads, tied embeddings, 151,936 tokens).
    "qwen2-0.5b": dict(architecture="qwen2", num_hidden_layers=24, hidden_size=896, num_attention_heads=14,
                       num_key_value_heads=2, intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True),
    # The same architecture, small: what benchmarks/gpu.sh --dry-run runs on a CPU.
    "qwen2-tiny": dict(architecture="qwen2", num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                       num_key_value_heads=2, intermediate_size=128, vocab_size=1024, tie_word_embeddings=True),
}
ARCHITECTURES = {"gpt2": (GPT2Config, GPT2LMHeadModel), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}


def add_shape_arguments(parser) -> None:
    """The arguments every rollout/update benchmark takes: model shape, batch, lengths, repeats."""
    parser.add_argument("--shape", default="tiny", choices=sorted(SHAPES))
    parser.add_argument("--n-envs", type=lambda text: [int(n) for n in text.split(",")], default=[8, 64],
                        help="comma-separated batch sizes (number of envs)")
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], help="the LM's weights (default: float32)")


def model_path(shape: str) -> str:
    """A directory holding the LM of this shape and the bundled tokenizer."""
    if SHAPES[shape] is None:
        return str(lm_gym.DEFAULT_MODEL)
    path = Path(tempfile.gettempdir()) / f"lm-gym-bench-{shape}-v2"
    if not (path / "model.safetensors").exists():
        tokenizer = lm_gym.load_tokenizer()
        # Pad the vocabulary to the model's with added tokens, so that the env's action space, the policy's
        # distribution and generate()'s sampling all span the full vocabulary (50,257 for GPT-2-small).
        tokenizer.add_tokens([f"<extra_{i}>" for i in range(SHAPES[shape]["vocab_size"] - len(tokenizer))])
        torch.manual_seed(0)
        fields = dict(SHAPES[shape])
        config_class, model_class = ARCHITECTURES[fields.pop("architecture", "gpt2")]
        positions = {"n_positions": fields.pop("n_positions", 1024)} if config_class is GPT2Config else {
            "max_position_embeddings": 1024}
        config = config_class(**positions, eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id,
                              **fields)
        model_class(config).save_pretrained(path)
        tokenizer.save_pretrained(path)
    return str(path)


def prompts_of_length(n_tokens: int, count: int = 8) -> list[str]:
    """``count`` distinct prompts of exactly ``n_tokens`` bundled-tokenizer tokens."""
    tokenizer = lm_gym.load_tokenizer()
    words = " ".join(p.text for p in lm_gym.load_prompts()).split()
    prompts = []
    for start in range(count):
        rotated = (words[start % len(words):] + words)[: 2 * n_tokens]  # enough words, never past the LM's window
        ids = tokenizer(" ".join(rotated), add_special_tokens=False)["input_ids"][:n_tokens]
        text = tokenizer.decode(ids)
        assert len(tokenizer(text, add_special_tokens=False)["input_ids"]) == n_tokens
        prompts.append(text)
    return prompts


PATHS = {
    "plain": "SB3 make_vec_env + SB3's default buffer",
    "recommended": "lm_gym.make_vec_env + EpisodeRolloutBuffer",
}


def stop_token_ids(shape: str) -> list[int] | None:
    """The ids that end an episode in the benchmarks (env ``stop_tokens`` and ``generate(eos_token_id=...)``).

    The bundled LM is trained and writes its EOS (None: the env's default). A random-init shape spreads its
    probability nearly evenly and would never write one EOS among 50,257 tokens, so every completion would
    run the full budget: there the first ``vocab_size // 24`` ids end an episode, and completions end after
    about 24 tokens on average, as a trained LM's do.
    """
    return None if SHAPES[shape] is None else list(range(SHAPES[shape]["vocab_size"] // 24))


def build_ppo(path_name: str, shape: str, n_envs: int, prompt_tokens: int, new_tokens: int, eos: bool = True,
              n_steps: int | None = None, batch_size: int | None = None, n_epochs: int = 1, **policy_kwargs) -> PPO:
    """PPO on TextGen-v0 with the LM of ``shape``, built the way a user builds it on one of the two paths.

    ``plain``: what a user writes first, ``stable_baselines3.common.env_util.make_vec_env("TextGen-v0")``
    (a DummyVecEnv of gym.make'd envs in Monitors) and ``PPO(LMActorCriticPolicy, venv)`` with SB3's default
    buffer. ``recommended``: ``lm_gym.make_vec_env`` (one TextGenVecEnv) and ``EpisodeRolloutBuffer``.
    Sentiment reward; episodes end at :func:`stop_token_ids` unless ``eos=False`` (then always at the
    budget). A rollout is ``n_steps`` (default: two completion budgets) per env.
    """
    model = model_path(shape)
    env_kwargs = dict(model=model, prompts=prompts_of_length(prompt_tokens, n_envs), max_new_tokens=new_tokens,
                      reward="sentiment")
    if not eos:
        env_kwargs["stop_tokens"] = []
    elif stop_token_ids(shape) is not None:
        env_kwargs["stop_tokens"] = stop_token_ids(shape)
    if path_name == "plain":
        venv, extra = sb3_make_vec_env("TextGen-v0", n_envs=n_envs, seed=0, env_kwargs=env_kwargs), {}
    else:
        venv, extra = lm_gym.make_vec_env(n_envs, seed=0, **env_kwargs), {"rollout_buffer_class": EpisodeRolloutBuffer}
    return PPO(LMActorCriticPolicy, venv, n_steps=n_steps or 2 * new_tokens, batch_size=batch_size or 4 * new_tokens,
               n_epochs=n_epochs, seed=0, device=device(), policy_kwargs={"model": model, **policy_kwargs}, **extra)


def dtype_kwargs(dtype: str | None) -> dict[str, str]:
    """The policy keyword for ``--dtype`` (none for the default, float32)."""
    return {} if dtype is None else {"dtype": dtype}


def collect_once(model: PPO) -> None:
    """One stock ``collect_rollouts`` of ``model.n_steps`` steps per env into its buffer."""
    if not hasattr(model, "_bench_callback"):
        model._setup_learn(total_timesteps=10**9)
        model._bench_callback = model._init_callback(None)
    model.collect_rollouts(model.env, model._bench_callback, model.rollout_buffer, model.n_steps)


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
