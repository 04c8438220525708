"""Training throughput, env steps/s: SB3's PPO in one process vs RLlib's PPO/APPO/IMPALA over env runners.

The same LM, task (target_word, up to 16 new tokens, EOS on), 8 envs in all, a rollout of 64 steps per env,
learning rate and PPO epochs; RLlib's learner runs in the driver process (num_learners=0) unless
--num-learners is given. Each configuration first trains --warmup steps (process start-up, first
forwards), then is timed over --steps more: throughput = env steps sampled / wall time, sampling and
learning together, as in a user's run. On a GPU machine --device cuda puts SB3's policy and RLlib's
learner on the GPU (--runner-gpus also puts the env runners' modules there).

    python benchmarks/rllib_scaling.py [--shape tiny|gpt2-small] [--steps 8192] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import logging
import os
import time

import ray

import lm_gym
from agents import make_algorithm
from agents.rllib import rllib_config
from harness import machine, model_path, prompts_of_length, stop_token_ids

ENVS = 8
RLLIB_CONFIGS = [  # (label, algorithm, env runners)
    ("RLlib PPO, 1 env runner x 8 envs", "ppo", 1),
    ("RLlib PPO, 2 env runners x 4 envs", "ppo", 2),
    ("RLlib APPO, 2 env runners x 4 envs", "appo", 2),
    ("RLlib IMPALA, 2 env runners x 4 envs", "impala", 2),
]


def env_kwargs(shape: str) -> dict:
    kwargs = dict(model=model_path(shape), prompts=prompts_of_length(16, 16), reward="target_word", max_new_tokens=16)
    if stop_token_ids(shape) is not None:
        kwargs["stop_tokens"] = stop_token_ids(shape)
    return kwargs


def sb3_rate(shape: str, warmup: int, steps: int, device: str) -> float:
    venv = lm_gym.make_vec_env(ENVS, seed=0, **env_kwargs(shape))
    model = make_algorithm("ppo", venv, model=model_path(shape), seed=0, device=device, n_steps=64)
    model.learn(warmup)
    start, done = time.perf_counter(), model.num_timesteps
    model.learn(steps, reset_num_timesteps=False)
    return (model.num_timesteps - done) / (time.perf_counter() - start)


def rllib_rate(shape: str, algo: str, runners: int, warmup: int, steps: int, learners: int, learner_gpus: float,
               runner_gpus: float) -> float:
    config = rllib_config(algo, env_kwargs(shape), {"model": model_path(shape)}, n_steps=64, num_env_runners=runners,
                          num_envs_per_env_runner=ENVS // runners, num_learners=learners,
                          num_gpus_per_learner=learner_gpus, seed=0)
    config.env_runners(num_gpus_per_env_runner=runner_gpus)
    algorithm = config.build_algo()
    try:
        def train() -> int:  # asynchronous algorithms may return before any env runner reported
            return int(algorithm.train().get("env_runners", {}).get("num_env_steps_sampled_lifetime", sampled))

        sampled = 0
        while sampled < warmup:
            sampled = train()
        start, done = time.perf_counter(), sampled
        while sampled < done + steps:
            sampled = train()
        return (sampled - done) / (time.perf_counter() - start)
    finally:
        algorithm.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="tiny", choices=["tiny", "gpt2-small"])
    parser.add_argument("--steps", type=int, default=8192)
    parser.add_argument("--warmup", type=int, default=2048)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--num-learners", type=int, default=0)
    parser.add_argument("--runner-gpus", type=float, default=0.0, help="GPUs per env runner (its module's forwards)")
    args = parser.parse_args()
    learner_gpus = 1.0 if args.device == "cuda" else 0.0
    logging.getLogger("ray.rllib").setLevel(logging.ERROR)
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    print(f"# training throughput: {args.shape}, target_word, up to 16 new tokens (EOS on), {ENVS} envs, "
          f"{args.steps} timed steps after {args.warmup}; learner on {args.device}; {machine()}, {os.cpu_count()} CPUs")
    base = sb3_rate(args.shape, args.warmup, args.steps, args.device)
    print(f"{'SB3 PPO, 1 process x 8 envs':40s} {base:9.0f} env steps/s   1.00x SB3", flush=True)
    for label, algo, runners in RLLIB_CONFIGS:  # printed as measured: a long run shows its figures as it goes
        rate = rllib_rate(args.shape, algo, runners, args.warmup, args.steps, args.num_learners, learner_gpus,
                          args.runner_gpus)
        print(f"{label:40s} {rate:9.0f} env steps/s   {rate / base:.2f}x SB3", flush=True)

if __name__ == "__main__":
    main()
