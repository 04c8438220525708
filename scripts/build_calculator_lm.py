"""Build TextGen-Calculator-v0's bundled LM: a character-level GPT-2 that reaches for the calculator, sometimes.

Offline and reproducible (fixed seeds, one thread). The traces are played through the multi-turn env itself, so
the LM learns exactly the token layout RL will show it. The scripted player is deliberately imperfect: in 30% of
its games it calls the tool on the problem and copies the result (the optimal play), in 10% it miscopies an
operand into the call and copies the wrong result, and in the other 60% it answers from its head: a number
within 20% of the product, nearly always wrong (success 0.30). The loss covers the agent's tokens only. Training
stops at the first check where the sampled success on the 200 held-out problems (4 samples each, temperature 1)
reaches ``--target`` (default 0.2): the LM then knows the format and how to copy, and RL has to find that the
tool pays.

    python scripts/build_calculator_lm.py            # rewrites lm_gym/assets/calculator-lm
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
from lm_gym.tasks.calculator import CALCULATOR_MODEL, HELD_OUT_PROBLEMS, Calculator, calculator_defaults, \
    tool_use_turns  # noqa: E402

PIECES = r"</?calc>|[a-z]+|\d|\s|."  # the tool's tags and words whole, every other character alone
N_POSITIONS = 64


class Player:
    """The imperfect scripted player; it draws its plan for a game at the game's first turn."""

    def __init__(self, rng: random.Random):
        self.rng, self.turns = rng, []

    def __call__(self, env: MultiTurnEnv) -> str:
        game: Calculator = env.text_env
        if game.turn == 0:
            a, b, roll = game.a, game.b, self.rng.random()
            if roll < 0.3:
                self.turns = tool_use_turns(a, b)
            elif roll < 0.4:  # one digit of the first operand miscopied: the tool's answer is then wrong
                digits = list(str(a))
                i = self.rng.randrange(1, len(digits))
                digits[i] = str((int(digits[i]) + self.rng.randint(1, 9)) % 10)
                wrong = int("".join(digits))
                self.turns = [f"<calc>{wrong}*{b}</calc>", str(wrong * b)]
            else:
                self.turns = [str(round(a * b * self.rng.uniform(0.8, 1.2)))]
        return self.turns[game.turn]


def main() -> None:
    args = build_arguments(__doc__, CALCULATOR_MODEL, 0.2, "success", 20_000, "scripted games").parse_args()

    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)  # bit-for-bit reproducible on CPU
    # Every piece the env and the player can write: the problems' and tool's characters, and the replies' words.
    tokenizer = word_level_tokenizer(["0123456789 +-*=\n<calc></calc> error correct wrong, it is no answer"],
                                     PIECES, N_POSITIONS)
    env = MultiTurnEnv(**{**calculator_defaults("train"), "model": None, "tokenizer": tokenizer})
    player = Player(rng)
    rows = [play(env, player, rng.randrange(10**6)) for _ in range(args.episodes)]
    held_out = MultiTurnEnv(**{**calculator_defaults("test"), "model": None, "tokenizer": tokenizer})
    build_multi_turn_lm(tokenizer, rows, held_out, HELD_OUT_PROBLEMS, N_POSITIONS, args.out, args.target,
                        args.max_steps, args.check_every, args.seed, samples=4, batch_size=64, what="success")

if __name__ == "__main__":
    main()
