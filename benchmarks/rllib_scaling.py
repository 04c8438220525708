"""Training throughput, env steps/s: SB3's PPO in one process vs RLlib's PPO/APPO/IMPALA over env runners.

The same LM, task (target_word, up to 16 new tokens, EOS on), 8 envs in all, a rollout of 64 steps per env,
learning rate and PPO epochs; RLlib's learner runs in the driver process (num_learners=0) unless
--num-learners is given. Each configuration first trains --warmup steps (process start-up, first
forwards), then is timed over --steps more: throughput = env steps sampled / wall time, sampling and
learning together, as in a user's run. On a GPU machine --device cuda puts SB3's policy and RLlib's
learner on the GPU (--runner-gpus also puts the env runners' modules there).

    python benchmarks/rllib_scaling.py [--shape tiny|gpt2-small] [--steps 8192] [--device cpu|cuda]

With --nodes it measures the multi-machine path instead: RLlib PPO with 2 env runners x 4 envs on one local Ray,
then on a local multi-node Ray cluster (``ray.cluster_utils.Cluster``; its head has no CPUs, so the env runners
run on other nodes, and their samples and the weights cross node boundaries): both env runners on one node with
2 CPUs, then one on each of two nodes with 1 CPU each. The nodes share this machine's cores, so the figures say
what crossing nodes costs, not what a second machine's cores add.

    python benchmarks/rllib_scaling.py --nodes [--steps 8192]
"""

from __future__ import annotations

import argparse
import logging
import os
import time

import ray
from ray.cluster_utils import Cluster

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
NODE_CONFIGS = [  # (label, CPUs of each worker node; None: one local Ray), 2 env runners x 4 envs
    ("local Ray, ray.init(num_cpus=2) (no cluster)", None),
    ("1 node x 2 CPUs (both env runners there)", [2]),
    ("2 nodes x 1 CPU (one env runner on each)", [1, 1]),
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
               runner_gpus: float, expect_runner_nodes: int | None = None) -> float:
    """Env steps/s of one RLlib configuration on the Ray this process is connected to. ``expect_runner_nodes``:
    refuse to time it unless the env runners landed on that many distinct nodes."""
    config = rllib_config(algo, env_kwargs(shape), {"model": model_path(shape)}, n_steps=64, num_env_runners=runners,
                          num_envs_per_env_runner=ENVS // runners, num_learners=learners,
                          num_gpus_per_learner=learner_gpus, seed=0)
    config.env_runners(num_gpus_per_env_runner=runner_gpus)
    algorithm = config.build_algo()
    try:
        if expect_runner_nodes is not None:
            nodes = set(algorithm.env_runner_group.foreach_env_runner(
                lambda runner: ray.get_runtime_context().get_node_id(), local_env_runner=False))
            assert len(nodes) == expect_runner_nodes, f"env runners on {len(nodes)} nodes, not {expect_runner_nodes}"
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


def start_ray(node_cpus: list[int] | None) -> Cluster | None:
    """One local Ray (``None``), or a local cluster: a head with no CPUs and a node of each of ``node_cpus``. Both
    hold 2 CPUs, as every configuration of the --nodes table does."""
    if node_cpus is None:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        return None
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for cpus in node_cpus:
        cluster.add_node(num_cpus=cpus)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False, logging_level=logging.ERROR)
    return cluster


def node_rates(shape: str, warmup: int, steps: int) -> None:
    """The --nodes table: each configuration on a fresh local Ray or cluster."""
    print(f"# RLlib PPO, 2 env runners x 4 envs, learner in the driver, on one local Ray, then on local Ray clusters "
          f"(head: 0 CPUs); {shape}, target_word, up to 16 new tokens (EOS on), {steps} timed steps after {warmup}; "
          f"{machine()}, {os.cpu_count()} CPUs shared by every node")
    base = None
    for label, node_cpus in NODE_CONFIGS:
        cluster = start_ray(node_cpus)
        try:
            rate = rllib_rate(shape, "ppo", 2, warmup, steps, 0, 0.0, 0.0,
                              expect_runner_nodes=len(node_cpus) if node_cpus else 1)
        finally:
            ray.shutdown()
            if cluster is not None:
                cluster.shutdown()
        base = base or rate
        print(f"{label:46s} {rate:9.0f} env steps/s   {rate / base:.2f}x local Ray", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="tiny", choices=["tiny", "gpt2-small"])
    parser.add_argument("--steps", type=int, default=8192)
    parser.add_argument("--warmup", type=int, default=2048)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--num-learners", type=int, default=0)
    parser.add_argument("--runner-gpus", type=float, default=0.0, help="GPUs per env runner (its module's forwards)")
    parser.add_argument("--nodes", action="store_true", help="1 vs 2 nodes of a local multi-node cluster instead")
    args = parser.parse_args()
    learner_gpus = 1.0 if args.device == "cuda" else 0.0
    logging.getLogger("ray.rllib").setLevel(logging.ERROR)
    if args.nodes:
        return node_rates(args.shape, args.warmup, args.steps)
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
