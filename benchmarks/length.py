"""Cost as episodes grow: store bytes, peak memory and ms/token of one rollout + update at L new tokens per episode.

For each L (default 256, 1k, 4k, 16k) and each path, one child process (so that its peak RSS is its own) builds PPO
on TextGen-v0 with a tiny GPT-2 of 16k positions (2 x 64, vocabulary 512), 8 envs, episodes of exactly L new tokens
after a 16-token prompt (``stop_tokens=[]``), one episode per env per rollout (``n_steps = L``), then times:

- the rollout (stock ``collect_rollouts``) against its limit, ``generate(min_new_tokens = max_new_tokens = L)`` on
  the same prompts (a decode without waste, DESIGN.md);
- one update epoch (``model.train()``, 4 minibatches of 2 episodes) against its limit, forward + backward + Adam
  over exactly the real tokens (8 rows of 16 + L, the same 4 minibatches, no padding);
- store bytes per generated token (the buffer's arrays) and peak RSS above the process's RSS once the model is built.

Paths: ``plain`` (SB3's ``make_vec_env`` and its ``DictRolloutBuffer``: refused before its first step where the
projected store exceeds the machine's memory) and ``recommended`` (``lm_gym.make_vec_env`` and
``EpisodeRolloutBuffer``).

    python benchmarks/length.py                      # 256,1024,4096,16384
    python benchmarks/length.py --lengths 256,1024 --paths recommended
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

N_ENVS, PROMPT_TOKENS, MINIBATCHES = 8, 16, 4


def rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def child(path_name: str, length: int) -> dict:
    from harness import build_ppo, collect_once, model_path, prompts_of_length

    import lm_gym
    from agents.sb3.store_cost import projected_bytes

    try:
        model = build_ppo(path_name, "tiny-16k", N_ENVS, PROMPT_TOKENS, length, eos=False, n_steps=length,
                          batch_size=length * N_ENVS // MINIBATCHES)
    except MemoryError as error:
        return {"refused": str(error).split(":")[0]}
    base = rss_mib()
    buffer = model.rollout_buffer
    model.policy.set_training_mode(False)
    start = time.perf_counter()
    collect_once(model)
    rollout = time.perf_counter() - start
    update = best_of(2, model.train)  # the same rollout twice: the first call also warms up
    peak = peak_rss_mib() - base
    tokens = length * N_ENVS
    store = buffer.store_bytes() if hasattr(buffer, "store_bytes") else projected_bytes(buffer) // 2

    per_step = window_costs(model)
    lm = model.policy.lm
    tokenizer = lm_gym.load_tokenizer(model_path("tiny-16k"))
    prompts = tokenizer(prompts_of_length(PROMPT_TOKENS, N_ENVS), return_tensors="pt", padding=True,
                        padding_side="left")
    with torch.no_grad():
        def decode_run(n: int = length) -> None:
            lm.generate(**prompts, min_new_tokens=n, max_new_tokens=n, do_sample=True, top_k=0,
                        pad_token_id=tokenizer.pad_token_id, use_cache=True)
        decode_run(16)  # warm-up
        decode = best_of(1, decode_run)
    ids = torch.randint(0, 512, (N_ENVS, PROMPT_TOKENS + length))
    optimizer = torch.optim.Adam(lm.parameters(), lr=1e-7)
    lm.train()

    def limit_run() -> None:
        for rows in ids.split(N_ENVS // MINIBATCHES):
            logits = lm(input_ids=rows, logits_to_keep=length).logits
            torch.nn.functional.cross_entropy(logits.flatten(0, 1), rows[:, -length:].flatten()).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    limit = best_of(2, limit_run)
    return {"store_bytes_per_token": store / tokens, "peak_mib": peak, "rollout_ms": 1e3 * rollout / tokens,
            "decode_ms": 1e3 * decode / tokens, "update_ms": 1e3 * update / tokens, "limit_ms": 1e3 * limit / tokens,
            **per_step}


def window_costs(model) -> dict[str, float]:
    """Microseconds per rollout step (all envs) of what moves whole windows, on the last observations: the vector
    env's shift and copy (``append_token``, ``_observations``), stock SB3's ``obs_as_tensor`` and the KV cache's
    prefix proof (``growth``)."""
    from stable_baselines3.common.utils import obs_as_tensor

    from agents.lm.forward import growth
    from lm_gym.env import append_token

    obs = {key: value.copy() for key, value in model._last_obs.items()}
    ids, mask = obs["input_ids"].copy(), obs["attention_mask"].copy()
    prev_ids, prev_mask = torch.as_tensor(ids).clone(), torch.as_tensor(mask).clone()
    append_token(obs["input_ids"], obs["attention_mask"], 5)  # a step: every row one token longer
    tensors = obs_as_tensor(obs, model.device)
    costs = {"shift_us": lambda: append_token(ids, mask, 5),
             "copy_us": lambda: (ids.copy(), mask.copy()),
             "obs_as_tensor_us": lambda: obs_as_tensor(obs, model.device),
             "growth_us": lambda: growth(prev_ids, prev_mask, tensors["input_ids"], tensors["attention_mask"])}
    return {name: 1e6 * best_of(20, fn) for name, fn in costs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default="256,1024,4096,16384")
    parser.add_argument("--paths", default="plain,recommended")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]))))
        return
    from harness import machine

    print(f"machine: {machine()}", flush=True)
    rows = []
    for length in [int(n) for n in args.lengths.split(",")]:
        for path_name in args.paths.split(","):
            start = time.perf_counter()
            out = subprocess.run([sys.executable, __file__, "--child", path_name, str(length)], capture_output=True,
                                 text=True)
            if out.returncode:
                result = {"failed": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}
            else:
                result = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append((length, path_name, result))
            print(f"L={length:>6} {path_name:<11} ({time.perf_counter() - start:.0f} s) {result}", flush=True)
    print(f"\n{'L':>6} | {'path':<11} | {'store B/token':>13} | {'peak MiB':>8} | {'rollout ms/tok (x limit)':>24} | "
          f"{'update ms/tok (x limit)':>23} | window moves per step, us: shift, copy, obs_as_tensor, growth")
    for length, path_name, r in rows:
        if "store_bytes_per_token" not in r:
            print(f"{length:>6} | {path_name:<11} | {next(iter(r.values()))}")
            continue
        print(f"{length:>6} | {path_name:<11} | {r['store_bytes_per_token']:>13,.0f} | {r['peak_mib']:>8,.0f} | "
              f"{r['rollout_ms']:>11.3f} ({r['rollout_ms'] / r['decode_ms']:>5.2f}x) | "
              f"{r['update_ms']:>10.3f} ({r['update_ms'] / r['limit_ms']:>5.2f}x) | {r['shift_us']:.0f}, "
              f"{r['copy_us']:.0f}, {r['obs_as_tensor_us']:.0f}, {r['growth_us']:.0f}")


if __name__ == "__main__":
    main()
