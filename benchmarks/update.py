"""Update tokens/s: ``PPO.train`` on the plain and the recommended path vs the limit, a plain LM step.

After one rollout with EOS on, times one PPO epoch over it (``model.train()``, ``n_epochs=1``) and, for
each path, the limit: a forward + backward + Adam step of the same LM over the same tokens in the same
number of minibatches. The limit's minibatches hold the rollout's episodes as whole sequences (each
episode's last observation), with logits only at its generated positions and a cross-entropy on its
tokens: what a supervised fine-tuning step on these tokens costs.

- plain: SB3's default buffer, whose minibatches are single steps in random order;
- recommended: ``EpisodeRolloutBuffer``, whose minibatches are whole episodes.

    python benchmarks/update.py [--shape tiny|gpt2-small|qwen2-0.5b] [--dtype bfloat16] [--n-envs 8,64]
                                [--paths plain,recommended]
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch

from agents.lm.forward import position_ids
from harness import PATHS, add_shape_arguments, build_ppo, collect_once, dtype_kwargs, machine, median_seconds


def minibatch_count(model) -> int:
    """How many minibatches ``model.train()`` runs per epoch over its current buffer."""
    buffer = model.rollout_buffer
    if hasattr(buffer, "episode_segments"):
        return sum(1 for _ in buffer.get(model.batch_size))
    return -(-buffer.buffer_size * buffer.n_envs // model.batch_size)


def episode_segments(buffer) -> list[np.ndarray]:
    """Flat (env-major: ``env * n_steps + step``) indices of each episode's steps, from the buffer's episode starts."""
    starts = buffer.episode_starts.astype(bool)
    segments = []
    for env in range(buffer.n_envs):
        cuts = np.flatnonzero(starts[1:, env]) + 1
        segments.extend(env * buffer.buffer_size + steps for steps in np.split(np.arange(buffer.buffer_size), cuts))
    return segments


def limit_step(model, minibatches: int):
    """Forward + backward + Adam over the rollout's episodes as whole sequences, in ``minibatches`` minibatches."""
    buffer = model.rollout_buffer
    segments = episode_segments(buffer)  # flat (env-major) indices of each episode's steps
    observations = {key: (value.swapaxes(0, 1).reshape(-1, value.shape[-1]) if value.shape[:2] ==
                          (buffer.buffer_size, buffer.n_envs) else value) for key, value in buffer.observations.items()}
    actions = buffer.actions.swapaxes(0, 1).reshape(-1) if buffer.actions.shape[:2] == (
        buffer.buffer_size, buffer.n_envs) else buffer.actions.reshape(-1)
    last = np.array([segment[-1] for segment in segments])
    ids = torch.as_tensor(observations["input_ids"][last], device=model.device)
    mask = torch.as_tensor(observations["attention_mask"][last], device=model.device)
    # Targets: the tokens each episode generated, right-aligned with the positions that predicted them.
    keep = max(len(segment) for segment in segments)
    targets = torch.full((len(segments), keep), -100, dtype=torch.long)
    for row, segment in enumerate(segments):
        targets[row, keep - len(segment):] = torch.as_tensor(actions[segment].astype(np.int64))
    targets = targets.to(model.device)
    lm = model.policy.lm
    optimizer = torch.optim.Adam(lm.parameters(), lr=1e-7)
    order = np.array_split(np.arange(len(segments)), minibatches)

    def run() -> None:
        for rows in order:
            if not len(rows):
                continue
            m = mask[rows]
            logits = lm(input_ids=ids[rows], attention_mask=m, position_ids=position_ids(m), logits_to_keep=keep).logits
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), targets[rows].flatten())
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    return run


def measure(path_name: str, shape: str, n_envs: int, prompt_tokens: int, new_tokens: int, repeats: int,
            dtype: str | None = None) -> dict:
    model = build_ppo(path_name, shape, n_envs, prompt_tokens, new_tokens, **dtype_kwargs(dtype))
    model.policy.set_training_mode(False)
    collect_once(model)
    tokens = model.n_steps * model.n_envs
    minibatches = minibatch_count(model)
    limit = limit_step(model, minibatches)
    train_times, limit_times = [], []
    limit()  # warm-up (train() warms up in its first repeat's shadow below)
    for _ in range(repeats):  # interleaved, so drift hits both alike
        train_times.append(median_seconds(model.train, 1, warmup=0))
        limit_times.append(median_seconds(limit, 1, warmup=0))
    return {"train": tokens / statistics.median(train_times), "limit": tokens / statistics.median(limit_times),
            "minibatches": minibatches, "episodes": len(episode_segments(model.rollout_buffer))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_shape_arguments(parser)
    parser.add_argument("--paths", default=",".join(PATHS), help="which paths to time (the plain one is slow on big LMs)")
    args = parser.parse_args()
    print(f"# update: {args.shape} ({args.dtype or 'float32'}), {args.prompt_tokens} prompt + up to {args.new_tokens} new tokens, EOS on, one epoch "
          f"over one rollout of {2 * args.new_tokens} steps per env, minibatches of {4 * args.new_tokens} steps, "
          f"{args.repeats} repeats; {machine()}")
    summary = []
    for n_envs in args.n_envs:
        print(f"## {n_envs} envs")
        for path_name in args.paths.split(","):
            r = measure(path_name, args.shape, n_envs, args.prompt_tokens, args.new_tokens, args.repeats, args.dtype)
            ratio = r["train"] / r["limit"]
            print(f"{path_name:12s} PPO.train {r['train']:9.0f} tokens/s | limit {r['limit']:9.0f} tokens/s | "
                  f"{ratio:.2f}x  ({r['minibatches']} minibatches, {r['episodes']} episodes; {PATHS[path_name]})")
            summary.append(f"{n_envs} envs {path_name} {ratio:.2f}x")
    print("PPO.train / forward+backward+Adam (target >= 0.7x on the recommended path): " + "; ".join(summary))


if __name__ == "__main__":
    main()
