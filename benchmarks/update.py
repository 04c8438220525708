"""Target 2: ``PPO.train`` tokens/s vs a plain full-sequence forward+backward of the same model and tokens.

After one rollout (every episode runs its full length), times one PPO epoch over it:
- stock SB3 buffer: each minibatch row is one token, evaluated over its whole prefix;
- EpisodeRolloutBuffer: each episode's steps are evaluated by one forward of the episode;
- plain: the same episodes as whole sequences, a causal-LM loss, backward and an Adam step per minibatch
  (what a supervised fine-tuning step on these tokens costs).

    python benchmarks/update.py [--shape tiny|gpt2-small] [--n-envs 8] [--prompt-tokens 16] [--new-tokens 32]
"""

from __future__ import annotations

import argparse

import torch
from stable_baselines3.common.buffers import DictRolloutBuffer

from agents.lm_forward import position_ids
from harness import add_shape_arguments, machine, median_seconds, model_path
from rollout import ppo_for


def plain_step_seconds(model, repeats: int) -> float:
    """Forward+backward+Adam over the rollout's episodes as whole sequences, in the same minibatches."""
    buffer = model.rollout_buffer
    segments = buffer.episode_segments()
    last = [segment[-1] for segment in segments]
    flat = {k: buffer.swap_and_flatten(v) if v.ndim == 3 else v for k, v in buffer.observations.items()}
    ids = torch.as_tensor(flat["input_ids"][last], device=model.device)
    mask = torch.as_tensor(flat["attention_mask"][last], device=model.device)
    per_batch = max(1, model.batch_size // len(segments[0]))
    lm = model.policy.lm
    optimizer = torch.optim.Adam(lm.parameters(), lr=1e-6)

    def run():
        for start in range(0, len(ids), per_batch):
            i, m = ids[start : start + per_batch], mask[start : start + per_batch]
            logits = lm(input_ids=i, attention_mask=m, position_ids=position_ids(m)).logits[:, :-1]
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), i[:, 1:].flatten(), reduction="none")
            (loss * m[:, 1:].flatten()).mean().backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    return median_seconds(run, repeats)


def train_seconds(model, repeats: int) -> float:
    model._setup_learn(total_timesteps=10**9)
    model.collect_rollouts(model.env, model._init_callback(None), model.rollout_buffer, model.n_steps)
    return median_seconds(model.train, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_shape_arguments(parser)
    parser.add_argument("--skip-stock", action="store_true", help="skip the (slow) stock per-token buffer")
    args = parser.parse_args()
    path = model_path(args.shape)
    tokens = 2 * args.new_tokens * args.n_envs  # one epoch over one rollout
    shared = (path, args.n_envs, args.prompt_tokens, args.new_tokens)
    results = {}
    if not args.skip_stock:
        stock = ppo_for(*shared, buffer_class=DictRolloutBuffer, group_episodes=False)
        results["PPO.train, stock buffer (per token)"] = tokens / train_seconds(stock, args.repeats)
    grouped = ppo_for(*shared)
    results["PPO.train, EpisodeRolloutBuffer"] = tokens / train_seconds(grouped, args.repeats)
    results["plain forward+backward+Adam"] = tokens / plain_step_seconds(grouped, args.repeats)
    print(f"# update: {args.shape}, n_envs={args.n_envs}, {args.prompt_tokens}+{args.new_tokens} tokens, "
          f"minibatch {grouped.batch_size} steps; {machine()}")
    for name, rate in results.items():
        print(f"{name:38s} {rate:10.0f} tokens/s")
    if not args.skip_stock:
        print(f"grouped / stock per-token update: "
              f"{results['PPO.train, EpisodeRolloutBuffer'] / results['PPO.train, stock buffer (per token)']:.1f}x")
    print(f"PPO.train / plain forward+backward: "
          f"{results['PPO.train, EpisodeRolloutBuffer'] / results['plain forward+backward+Adam']:.2f}x (target >= 0.7x)")


if __name__ == "__main__":
    main()
