"""Target 1: rollout tokens/s through stock ``PPO.collect_rollouts`` vs ``model.generate()``.

Same model, batch (n_envs), prompt and completion lengths; every episode runs its full length.
The stock SB3 loop calls the policy once per token for all envs; with ``use_kv_cache`` each call
feeds one token per env on top of cached keys/values.

    python benchmarks/rollout.py [--shape tiny|gpt2-small] [--n-envs 8] [--prompt-tokens 16] [--new-tokens 32]
"""

from __future__ import annotations

import argparse

import torch
from stable_baselines3 import PPO

import lm_gym
from agents import EpisodeRolloutBuffer, LMActorCriticPolicy
from harness import add_shape_arguments, device, machine, median_seconds, model_path, prompts_of_length


def ppo_for(path: str, n_envs: int, prompt_tokens: int, new_tokens: int, buffer_class=EpisodeRolloutBuffer,
            n_epochs: int = 1, **policy_kwargs) -> PPO:
    """PPO on envs whose episodes all run ``new_tokens`` steps; a rollout is two episodes per env."""
    env = lm_gym.make_vec_env(n_envs, seed=0, model=path, prompts=prompts_of_length(prompt_tokens, n_envs),
                              max_new_tokens=new_tokens, stop_tokens=[], reward="sentiment")
    return PPO(LMActorCriticPolicy, env, n_steps=2 * new_tokens, batch_size=4 * new_tokens, n_epochs=n_epochs,
               seed=0, device=device(), policy_kwargs={"model": path, **policy_kwargs},
               rollout_buffer_class=buffer_class)


def collect_seconds(model: PPO, repeats: int) -> float:
    model._setup_learn(total_timesteps=10**9)
    callback = model._init_callback(None)
    return median_seconds(lambda: model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps),
                          repeats)


def generate_seconds(model: PPO, prompts: list[str], new_tokens: int, repeats: int) -> float:
    tokenizer = lm_gym.load_tokenizer(model.policy.model_name)
    batch = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left").to(model.device)
    lm = model.policy.lm.eval()

    @torch.no_grad()
    def run():
        lm.generate(**batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=True, top_k=0,
                    pad_token_id=tokenizer.pad_token_id, use_cache=True)

    return median_seconds(run, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_shape_arguments(parser)
    args = parser.parse_args()
    path = model_path(args.shape)
    tokens = 2 * args.new_tokens * args.n_envs  # per rollout
    results = {}
    for name, kwargs in (("stock SB3 loop, no cache", {"use_kv_cache": False}), ("stock SB3 loop, KV cache", {})):
        model = ppo_for(path, args.n_envs, args.prompt_tokens, args.new_tokens, **kwargs)
        results[name] = tokens / collect_seconds(model, args.repeats)
    prompts = prompts_of_length(args.prompt_tokens, args.n_envs)
    results["generate()"] = tokens / (2 * generate_seconds(model, prompts, args.new_tokens, args.repeats))
    print(f"# rollout: {args.shape}, n_envs={args.n_envs}, {args.prompt_tokens}+{args.new_tokens} tokens; {machine()}")
    for name, rate in results.items():
        print(f"{name:28s} {rate:10.0f} tokens/s")
    print(f"KV cache speed-up over no cache: {results['stock SB3 loop, KV cache'] / results['stock SB3 loop, no cache']:.2f}x")
    print(f"collect_rollouts / generate(): {results['stock SB3 loop, KV cache'] / results['generate()']:.2f}x (target >= 1.0x)")


if __name__ == "__main__":
    main()
