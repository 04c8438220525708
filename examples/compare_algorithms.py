"""Compare RL algorithms on one TextGen-v0 task from Python (what `lm-gym compare` runs).

    python examples/compare_algorithms.py [--steps 2048] [--seeds 2]

Writes curves.png, results.md and results.json into a new directory under runs/.
"""

import argparse

from agents import TrainConfig, compare

parser = argparse.ArgumentParser()
parser.add_argument("--algos", default="ppo,a2c,maskable_ppo,trpo,dqn")
parser.add_argument("--steps", type=int, default=2048)
parser.add_argument("--seeds", type=int, default=2)
parser.add_argument("--out", default="runs")
args = parser.parse_args()

# Any TextGen-v0 task: here the offline sentiment default; env_options takes every other TextGenEnv argument.
task = TrainConfig(reward="sentiment", max_new_tokens=16, steps=args.steps, out=args.out,
                   env_options={"stop_tokens": None})
out = compare(args.algos.split(","), seeds=args.seeds, base=task)
print(f"results in {out}")
