"""Build TextGen-GuessNumber-v1's bundled LM: a small GPT-2 that plays guess-the-number, imperfectly.

Offline and reproducible (fixed seeds, one thread). The traces are played *through the multi-turn env itself*
(``lm_gym.MultiTurnEnv``), so the LM learns exactly the token layout RL will show it: the text env's first
message, the agent's guess and EOS, the reply. The player is deliberately imperfect: each guess is the midpoint of
the range left with probability 0.35, any number of the game's range with probability 0.2 (ignoring the hints),
and else a uniform pick from the range left. A fifth of the traces are GEM's
``game:GuessTheNumber-v0-easy`` (1 to 10 in 4 turns, guesses written ``\\boxed{n}``, GEM's own replies), so the
same LM trains on that GEM env offline too (fewer: GEM's instructions make them long). The tokenizer spells
numbers digit by digit (no BPE merges across digits), so that the midpoint of "51 to 100" is a computation on
digits rather than a lookup over 100 number tokens; the LM (3 layers x 128) is large enough to pick up part of
that computation. The loss covers the agent's tokens only (the env's replies are context). Training stops at
the first check where the sampled success on the 40 held-out games (8 samples each, temperature 1, as RL
samples) reaches ``--target`` (default 0.3): RL then starts between 0.1 and 0.6, far from 1.0.

    python scripts/build_guess_number_lm.py          # rewrites lm_gym/assets/guess-number-lm (needs gem-llm)

Needs torch, transformers, tokenizers (lm-gym's dependencies) and gem-llm (``pip install 'lm-gym[gem]'``).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerFast

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from build_default_lm import build_tokenizer  # noqa: E402
from task_lm import as_batchable, build_arguments, play, random_batches, sampled_return, save_bundled_lm, small_gpt2, \
    train_until_target  # noqa: E402
from lm_gym.multiturn import MultiTurnEnv  # noqa: E402
from lm_gym.tasks.guess_number import GUESS_NUMBER_MODEL, HELD_OUT_GAMES, GuessNumber, guess_number_defaults  # noqa: E402

GEM_ID = "gem:game:GuessTheNumber-v0-easy"
N_POSITIONS = 512  # room for GEM's long instructions


class Player:
    """The imperfect scripted player of one game: tracks what the hints leave and guesses, mostly carelessly.
    ``game_of(env)`` reads the game's ``(low, high, secret)`` from the env (to follow the hints of either game's
    format); :meth:`start` sets them when the player drives a text env directly."""

    def __init__(self, rng: random.Random, boxed: bool, game_of=None):
        self.rng, self.boxed, self.game_of = rng, boxed, game_of
        self.low = self.high = self.lo = self.hi = self.secret = None
        self.last = None

    def start(self, low: int, high: int, secret: int) -> None:
        self.low, self.high, self.secret = low, high, secret
        self.lo, self.hi = low, high

    def __call__(self, env: MultiTurnEnv) -> str:
        """The next turn's text (:func:`task_lm.play`'s ``next_turn``), after hearing how the last guess went."""
        if self.last is None:
            self.start(*self.game_of(env))
        else:
            self.hear(self.last)
        self.last = self.guess()
        return self.text(self.last)

    def guess(self) -> int:
        roll = self.rng.random()
        if roll < 0.35:
            return (self.lo + self.hi) // 2
        if roll < 0.55:
            return self.rng.randint(self.low, self.high)
        return self.rng.randint(self.lo, self.hi)

    def text(self, guess: int) -> str:
        return f"\\boxed{{{guess}}}" if self.boxed else str(guess)

    def hear(self, guess: int) -> None:
        if guess < self.secret:
            self.lo = max(self.lo, guess + 1)
        elif guess > self.secret:
            self.hi = min(self.hi, guess - 1)


def ours_game(env: MultiTurnEnv) -> tuple[int, int, int]:
    game = env.text_env
    return game.first, game.last, game.secret


def gem_game(env: MultiTurnEnv) -> tuple[int, int, int]:
    game = env.text_env
    return game.min_number, game.max_number, game.game_number


def transcripts(rng: random.Random, episodes: int) -> list[str]:
    """Texts of scripted games of both formats, to train the tokenizer on."""
    texts = []
    ours = GuessNumber("train")
    gem = MultiTurnEnv(GEM_ID, max_tokens=10_000).text_env
    for game, boxed, read in ((ours, False, lambda g: (g.first, g.last, g.secret)),
                              (gem, True, lambda g: (g.min_number, g.max_number, g.game_number))):
        for _ in range(episodes):
            first, _ = game.reset(seed=rng.randrange(10**6))
            player, texts_of_game, done = Player(rng, boxed), [first], False
            player.start(*read(game))
            while not done:
                guess = player.guess()
                reply, _, terminated, truncated, _ = game.step(player.text(guess))
                done = terminated or truncated
                player.hear(guess)
                texts_of_game += [player.text(guess), reply]
            texts.append("\n".join(texts_of_game))
    return texts


def token_traces(tokenizer: PreTrainedTokenizerFast, rng: random.Random, episodes: int):
    """Agent-token-masked training rows of both games, played through MultiTurnEnv with ``tokenizer``."""
    ours = MultiTurnEnv(**{**guess_number_defaults("train"), "model": None, "tokenizer": tokenizer})
    gem = MultiTurnEnv(GEM_ID, tokenizer=tokenizer, max_tokens=N_POSITIONS, max_turn_tokens=12)
    rows = [play(ours, Player(rng, False, ours_game), rng.randrange(10**6)) for _ in range(episodes)]
    # GEM's games are long (its instructions): a quarter as many, trained on in batches of their own.
    gem_rows = [play(gem, Player(rng, True, gem_game), rng.randrange(10**6)) for _ in range(episodes // 4)]
    return rows, gem_rows


def main() -> None:
    args = build_arguments(__doc__, GUESS_NUMBER_MODEL, 0.3, "success", 8000, "scripted games of each format"
                           ).parse_args()

    rng = random.Random(args.seed)
    random.seed(args.seed)  # GEM draws its numbers from the global stream (seeded again by every reset)
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)  # bit-for-bit reproducible on CPU
    tokenizer = build_tokenizer(transcripts(rng, 2000), vocab_size=384, individual_digits=True)
    tokenizer.model_max_length = N_POSITIONS
    ours, gem = token_traces(tokenizer, rng, args.episodes)
    pools = [as_batchable(ours, tokenizer.pad_token_id), as_batchable(gem, tokenizer.pad_token_id)]
    print(f"{len(ours)} + {len(gem)} GEM traces, up to {pools[0][0].shape[1]} / {pools[1][0].shape[1]} tokens, "
          f"vocab {len(tokenizer)}", flush=True)

    model = small_gpt2(tokenizer, N_POSITIONS)
    generator = torch.Generator().manual_seed(args.seed)
    ours_batch, gem_batch = (random_batches(model, *pool, tokenizer.pad_token_id, 32, generator) for pool in pools)

    def batch_loss(step: int) -> torch.Tensor:
        return gem_batch(step) if step % 5 == 0 else ours_batch(step)  # one batch in five of GEM's games

    held_out = MultiTurnEnv(**{**guess_number_defaults("test"), "model": None, "tokenizer": tokenizer})
    instances = [{"text_env_seed": i} for i in range(HELD_OUT_GAMES)]
    steps, success = train_until_target(model, batch_loss, lambda: sampled_return(model, held_out, instances, 8),
                                        args.target, args.max_steps, args.check_every, lr=2e-3, what="success")
    save_bundled_lm(model, tokenizer, args.out, steps, "success", success)


if __name__ == "__main__":
    main()
