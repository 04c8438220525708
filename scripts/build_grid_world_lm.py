"""Build TextGen-GridWorld-v0's bundled LM: a small word-level GPT-2 that walks the grid, carelessly.

Offline and reproducible (fixed seeds, one thread). The traces are played through the multi-turn env itself, so
the LM learns exactly the token layout RL will show it. The scripted walker is deliberately imperfect: each move
is a shortest-path move (breadth-first search) with probability ``--skill`` (default 0.7), else any of the four
moves at random. The loss covers the agent's tokens only. Training stops at the first check where the sampled
return on the 100 held-out layouts (2 samples each, temperature 1) reaches ``--target`` (default 0.25, about a
third of the optimum's 0.80): RL then starts well between the walker's carelessness and the shortest paths.

    python scripts/build_grid_world_lm.py            # rewrites lm_gym/assets/grid-world-lm
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from task_lm import build_arguments, build_multi_turn_lm, play, word_level_tokenizer  # noqa: E402
from lm_gym.multiturn import MultiTurnEnv  # noqa: E402
from lm_gym.tasks.grid_world import GRID_WORLD_MODEL, HELD_OUT_LAYOUTS, MOVES, GridWorld, grid_world_defaults, \
    optimal_moves  # noqa: E402

PIECES = r"[a-z]+|\d|\s|."  # words whole, every other character alone
N_POSITIONS = 224


def walker(rng: random.Random, skill: float):
    """The scripted walker: a shortest-path move with probability ``skill``, else a random one."""
    def next_turn(env: MultiTurnEnv) -> str:
        game: GridWorld = env.text_env
        if rng.random() < skill:
            return rng.choice(optimal_moves(game.layout, game.position))
        return rng.choice(list(MOVES))
    return next_turn


def main() -> None:
    parser = build_arguments(__doc__, GRID_WORLD_MODEL, 0.25, "return", 12_000, "scripted games", check_every=300)
    parser.add_argument("--skill", type=float, default=0.7, help="the walker's probability of a shortest-path move")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)  # bit-for-bit reproducible on CPU
    words = "0123456789 ,.x\n grid walls goal you bump say or " + " ".join(MOVES)
    tokenizer = word_level_tokenizer([words], PIECES, N_POSITIONS)
    env = MultiTurnEnv(**{**grid_world_defaults("train"), "model": None, "tokenizer": tokenizer})
    next_turn = walker(rng, args.skill)
    rows = [play(env, next_turn, rng.randrange(10**6)) for _ in range(args.episodes)]
    held_out = MultiTurnEnv(**{**grid_world_defaults("test"), "model": None, "tokenizer": tokenizer})
    build_multi_turn_lm(tokenizer, rows, held_out, HELD_OUT_LAYOUTS, N_POSITIONS, args.out, args.target,
                        args.max_steps, args.check_every, args.seed, samples=2, batch_size=32, what="return")

if __name__ == "__main__":
    main()
