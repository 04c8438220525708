"""LoRA memory: full fine-tuning (policy + frozen reference copy) vs LoRA (one LM, adapters off = reference).

Each configuration runs one PPO rollout + update with the KL penalty in a fresh process and reports:
tensor bytes by role (weights, gradients, Adam state, reference copy), counted exactly from the live
tensors, and the measured peak memory growth (CUDA: max_memory_allocated; CPU: ru_maxrss).

    python benchmarks/lora_memory.py [--shape gpt2-small] [--n-envs 8] [--new-tokens 32]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIGS = {
    "full": {},
    "lora": {"lora": {"r": 16, "lora_alpha": 32, "target_modules": ["c_attn", "c_proj", "c_fc"]}},
    "lora, bf16 base": {"lora": {"r": 16, "lora_alpha": 32, "target_modules": ["c_attn", "c_proj", "c_fc"]},
                        "dtype": "bfloat16"},
}


def tensor_mib(tensors) -> float:
    """MiB of the distinct storages behind ``tensors`` (tied weights count once)."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors if t is not None}
    return sum(storages.values()) / 2**20


def one(shape: str, config: str, n_envs: int, new_tokens: int) -> dict:
    import torch

    from agents import KLPenaltyCallback
    from harness import build_ppo

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    baseline = torch.cuda.memory_allocated() if torch.cuda.is_available() else \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    model = build_ppo("recommended", shape, n_envs, 16, new_tokens, eos=False, **CONFIGS[config])
    kl = KLPenaltyCallback(coef=0.05)  # loads the reference the way lm-gym train does
    model.learn(model.n_steps * n_envs, callback=kl)
    policy = model.policy
    params = list(policy.parameters())
    peak = (torch.cuda.max_memory_allocated() if torch.cuda.is_available() else
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) - baseline
    return {
        "weights_mib": tensor_mib(params),
        "trainable_params": sum(p.numel() for p in params if p.requires_grad),
        "grads_mib": tensor_mib(p.grad for p in params),
        "adam_mib": tensor_mib(t for state in model.policy.optimizer.state.values() for t in state.values()
                               if torch.is_tensor(t) and t.dim() > 0),
        "reference_mib": tensor_mib(kl.reference.parameters()),
        "peak_growth_mib": peak / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="gpt2-small")
    parser.add_argument("--n-envs", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # CONFIG: run in this process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.shape, args.one, args.n_envs, args.new_tokens)))
        return
    from harness import machine

    results = {}
    for config in CONFIGS:
        cmd = [sys.executable, str(HERE / "lora_memory.py"), "--shape", args.shape, "--n-envs", str(args.n_envs),
               "--new-tokens", str(args.new_tokens), "--one", config]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE, check=True).stdout
        results[config] = json.loads(out.strip().splitlines()[-1])
    print(f"# LoRA memory: {args.shape}, n_envs={args.n_envs}, 16 + {args.new_tokens} tokens, one rollout + one "
          f"PPO update with the KL penalty; {machine()}")
    print(f"{'config':>16} | {'trainable':>11} | {'weights':>8} | {'grads':>7} | {'Adam':>7} | {'reference':>9} | "
          f"{'sum MiB':>8} | {'peak growth MiB':>15}")
    full_total = None
    for config, r in results.items():
        total = r["weights_mib"] + r["grads_mib"] + r["adam_mib"] + r["reference_mib"]
        full_total = full_total or total
        print(f"{config:>16} | {r['trainable_params']:>11,} | {r['weights_mib']:8.1f} | {r['grads_mib']:7.1f} | "
              f"{r['adam_mib']:7.1f} | {r['reference_mib']:9.1f} | {total:8.1f} | {r['peak_growth_mib']:15.0f}"
              f"   (full / this: {full_total / total:.2f}x)")


if __name__ == "__main__":
    main()
