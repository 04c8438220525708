"""Target 4: cost per generated token as completions grow, old path vs new path, and peak memory.

old: the stock SB3 way, each policy call and each update row runs the whole prefix (no KV cache,
     DictRolloutBuffer) - total cost grows as O(L^2) in the completion length L;
new: KV-cached rollouts + EpisodeRolloutBuffer (one forward per episode) - O(L) up to attention.

Each configuration runs in a fresh process, so its peak resident memory (ru_maxrss) is its own.

    python benchmarks/scaling.py [--shape tiny-1k] [--lengths 16,64,256] [--n-envs 8]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def one(shape: str, new_tokens: int, n_envs: int, path_kind: str) -> dict:
    import torch

    from harness import build_ppo, synchronize

    old = path_kind == "old"
    model = build_ppo("plain" if old else "recommended", shape, n_envs, 16, new_tokens, eos=False,
                      use_kv_cache=not old, group_episodes=not old)
    model._setup_learn(total_timesteps=10**9)
    callback = model._init_callback(None)
    reference = model.policy.load_reference_model()  # resident like the KL callback's
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    synchronize()
    start = time.perf_counter()
    model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
    synchronize()
    rollout = time.perf_counter() - start
    start = time.perf_counter()
    model.train()
    synchronize()
    update = time.perf_counter() - start
    tokens = model.n_steps * n_envs
    weights = sum(p.numel() * p.element_size() for p in model.policy.lm.parameters())
    copies = (weights + sum(p.numel() * p.element_size() for p in reference.parameters())) / weights
    peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else \
        (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline) / 1024
    return {"rollout_ms_per_token": 1000 * rollout / tokens, "update_ms_per_token": 1000 * update / tokens,
            "extra_peak_mib": peak, "weight_copies": copies, "weights_mib": weights / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="tiny-1k", help="tiny-1k: the bundled LM's shape with 1024 positions")
    parser.add_argument("--lengths", default="16,64,256")
    parser.add_argument("--n-envs", type=int, default=8)
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # LENGTH old|new: run in this process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.shape, int(args.one[0]), args.n_envs, args.one[1])))
        return
    from harness import machine

    rows = []
    for length in map(int, args.lengths.split(",")):
        result = {}
        for kind in ("old", "new"):
            cmd = [sys.executable, str(HERE / "scaling.py"), "--shape", args.shape, "--n-envs", str(args.n_envs),
                   "--one", str(length), kind]
            out = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE, check=True).stdout
            result[kind] = json.loads(out.strip().splitlines()[-1])
        rows.append((length, result))
    print(f"# scaling: {args.shape}, n_envs={args.n_envs}, prompt 16 tokens, one rollout (2 episodes/env) "
          f"+ one PPO epoch; {machine()}")
    print(f"{'new tokens':>10} | {'rollout ms/token old -> new':>28} | {'update ms/token old -> new':>27} | "
          f"{'extra peak MiB old -> new':>26} | weight copies")
    for length, r in rows:
        o, n = r["old"], r["new"]
        print(f"{length:>10} | {o['rollout_ms_per_token']:8.2f} -> {n['rollout_ms_per_token']:6.2f} "
              f"({o['rollout_ms_per_token'] / n['rollout_ms_per_token']:5.1f}x) | "
              f"{o['update_ms_per_token']:8.2f} -> {n['update_ms_per_token']:6.2f} "
              f"({o['update_ms_per_token'] / n['update_ms_per_token']:5.1f}x) | "
              f"{o['extra_peak_mib']:9.0f} -> {n['extra_peak_mib']:6.0f} | {n['weight_copies']:.0f} "
              f"({n['weights_mib']:.1f} MiB each)")
    first, last = rows[0], rows[-1]
    growth = last[0] / first[0]
    for kind in ("old", "new"):
        per_token = [r[kind]["rollout_ms_per_token"] + r[kind]["update_ms_per_token"] for _, r in (first, last)]
        print(f"{kind}: per-token cost grows {per_token[1] / per_token[0]:.1f}x while length grows {growth:.0f}x")


if __name__ == "__main__":
    main()
