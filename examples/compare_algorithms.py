"""Compare RL algorithms on one task from Python (what `lm-gym compare` runs).

    python examples/compare_algorithms.py [--env TextGen-Arithmetic-v0] [--steps 2048] [--seeds 2]

Writes curves.png, results.md and results.json into a new directory under runs/.
"""

import argparse

from agents import TrainConfig, compare

parser = argparse.ArgumentParser()
parser.add_argument("--env", default="TextGen-v0", help="TextGen-v0 (sentiment) or TextGen-Arithmetic-v0")
parser.add_argument("--algos", default="ppo,grpo,rloo,reinforce,a2c,maskable_ppo,trpo")
parser.add_argument("--steps", type=int, default=2048)
parser.add_argument("--seeds", type=int, default=2)
parser.add_argument("--out", default="runs")
args = parser.parse_args()

# The env sets the LM, reward, token budget and prompts; any of them can be overridden here, and env_options
# takes every other TextGenEnv argument.
task = TrainConfig(env=args.env, steps=args.steps, out=args.out, env_options={"stop_tokens": None})
out = compare(args.algos.split(","), seeds=args.seeds, base=task)
print(f"results in {out}")
