"""Rollout tokens/s: stock ``PPO.collect_rollouts`` on the plain and the recommended path vs ``model.generate()``.

EOS is on: episodes end early and restart with a full prefill, as users' do (random-init shapes, which
never write their EOS, end at a stop set instead: ``harness.stop_token_ids``). Same LM, prompts (all of
``--prompt-tokens`` tokens), budget and batch (``--n-envs`` rows). Tokens are counted as generated:
env steps for the rollout; for ``generate()``, each row's tokens up to and including its EOS (a batch
keeps running until its last row finishes, as ``generate()`` does). The three are timed in turn within
each repeat; medians of the repeats.

    python benchmarks/rollout.py [--shape tiny|gpt2-small|qwen2-0.5b] [--dtype bfloat16] [--n-envs 8,64]
                                 [--prompt-tokens 16] [--new-tokens 32]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import lm_gym
from harness import (PATHS, add_shape_arguments, build_ppo, collect_once, dtype_kwargs, machine, prompts_of_length,
                     stop_token_ids, synchronize)


def timed(fn) -> tuple[float, int]:
    """(seconds, tokens) of one call of ``fn`` (which returns the tokens it generated)."""
    synchronize()
    start = time.perf_counter()
    tokens = fn()
    synchronize()
    return time.perf_counter() - start, tokens


def rollout_fn(model):
    def run() -> int:
        collect_once(model)
        return model.n_steps * model.n_envs

    return run


def generate_fn(model, prompts: list[str], new_tokens: int, stop_ids: list[int] | None):
    tokenizer = lm_gym.load_tokenizer(model.policy.model_name)
    batch = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left").to(model.device)
    lm = model.policy.lm
    stops = torch.tensor(stop_ids if stop_ids is not None else [tokenizer.eos_token_id], device=model.device)

    @torch.no_grad()
    def run() -> int:
        out = lm.generate(**batch, max_new_tokens=new_tokens, do_sample=True, top_k=0, pad_token_id=tokenizer.pad_token_id,
                          eos_token_id=stops.tolist(), use_cache=True)[:, batch["input_ids"].shape[1]:]
        # Tokens up to and including each row's first stop token (generate() pads finished rows after it).
        is_stop = torch.isin(out, stops)
        ended = is_stop.int().cumsum(1)
        return int(((ended == 0) | ((ended == 1) & is_stop)).sum())

    return run


def measure(shape: str, n_envs: int, prompt_tokens: int, new_tokens: int, repeats: int,
            dtype: str | None = None) -> dict[str, float]:
    models = {name: build_ppo(name, shape, n_envs, prompt_tokens, new_tokens, **dtype_kwargs(dtype)) for name in PATHS}
    for model in models.values():
        model.policy.set_training_mode(False)
    runs = {name: rollout_fn(model) for name, model in models.items()}
    runs["generate()"] = generate_fn(models["recommended"], prompts_of_length(prompt_tokens, n_envs), new_tokens,
                                     stop_token_ids(shape))
    for run in runs.values():  # warm-up
        run()
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            seconds, tokens = timed(run)
            rates[name].append(tokens / seconds)
    return {name: statistics.median(values) for name, values in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_shape_arguments(parser)
    args = parser.parse_args()
    print(f"# rollout: {args.shape} ({args.dtype or 'float32'}), {args.prompt_tokens} prompt + up to {args.new_tokens} new tokens, EOS on, "
          f"{args.repeats} repeats; {machine()}")
    summary = []
    for n_envs in args.n_envs:
        rates = measure(args.shape, n_envs, args.prompt_tokens, args.new_tokens, args.repeats, args.dtype)
        print(f"## {n_envs} envs")
        for name, rate in rates.items():
            print(f"{name:14s} {rate:10.0f} tokens/s   {PATHS.get(name, 'the same LM, batch and prompts')}")
        summary.append(f"{n_envs} envs: " + ", ".join(
            f"{name} {rates[name] / rates['generate()']:.2f}x" for name in PATHS))
    print("rollout / generate() (target >= 1.0x): " + "; ".join(summary))


if __name__ == "__main__":
    main()
