"""Compare RL algorithms on one task, or on the task suite, from Python (what `lm-gym compare` runs).

    python examples/compare_algorithms.py [--env TextGen-Arithmetic-v0] [--steps 2048] [--seeds 2]
    python examples/compare_algorithms.py --suite --steps 4096 --seeds 1

Writes curves.png, results.md and results.json (per task, and suite.md / suite.png for the suite) into a new
directory under runs/.
"""

import argparse

import lm_gym
from agents import compare

parser = argparse.ArgumentParser()
parser.add_argument("--env", default="TextGen-v0", help="TextGen-v0 (sentiment) or TextGen-Arithmetic-v0")
parser.add_argument("--algos", default="ppo,grpo,rloo,reinforce,a2c,maskable_ppo,trpo")
parser.add_argument("--steps", type=int, default=2048)
parser.add_argument("--seeds", type=int, default=2)
parser.add_argument("--suite", action="store_true", help="every task with a known optimum (lm_gym.suite())")
parser.add_argument("--out", default="runs")
args = parser.parse_args()

# Each env sets its LM, reward, token budget, prompts or task instances and tuned hyperparameters; any TrainConfig
# field given here (steps, out, env_options...) overrides them for every run.
envs = [task.env_id for task in lm_gym.suite()] if args.suite else [args.env]
out = compare(args.algos.split(","), seeds=args.seeds, envs=envs, steps=args.steps, out=args.out)
print(f"results in {out}")
