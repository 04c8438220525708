"""Build TextGen-LongGridWorld-v0's bundled LM: a small word-level GPT-2 of 2,048 positions that walks the big grid,
carelessly.

Offline and reproducible (fixed seeds, one thread), as ``build_grid_world_lm.py``: scripted walks played through the
multi-turn env itself, the loss on the agent's tokens only, training stopped at the first check where the sampled
return on the 100 held-out layouts (2 samples each, temperature 1) reaches ``--target`` (default 0.2; the optimum
averages 0.61, the scripted walker 0.37). The walks are 1,000-2,000 tokens: the first ``--crop-steps`` steps train on
random crops of ``--crop`` tokens at their true positions (a move depends on the last view and line, and a crop costs
a fraction of a whole walk's attention), the rest on whole walks (``--batch-size`` / 8 of them), where the LM learns
to read a move's context among 2,000 tokens; every check plays whole walks.

    python scripts/build_long_grid_world_lm.py            # rewrites lm_gym/assets/long-grid-world-lm
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from build_grid_world_lm import PIECES, walker  # noqa: E402
from task_lm import (as_batchable, build_arguments, play, sampled_return, save_bundled_lm, small_gpt2,  # noqa: E402
                     train_until_target, word_level_tokenizer)
from lm_gym.multiturn import MultiTurnEnv  # noqa: E402
from lm_gym.tasks.grid_world import HELD_OUT_LAYOUTS, MOVES  # noqa: E402
from lm_gym.tasks.long_grid_world import LONG_GRID_WORLD_MODEL, MAX_TOKENS, long_grid_world_defaults  # noqa: E402


def main() -> None:
    parser = build_arguments(__doc__, LONG_GRID_WORLD_MODEL, 0.2, "return", 2_000, "scripted walks", check_every=100)
    parser.add_argument("--skill", type=float, default=0.75, help="the walker's probability of a shortest-path move")
    parser.add_argument("--crop", type=int, default=256, help="tokens per training crop")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--crop-steps", type=int, default=300)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)  # bit-for-bit reproducible on CPU
    words = "0123456789 ,.:x\n#@*. grid goal bump say or you " + " ".join(MOVES)
    tokenizer = word_level_tokenizer([words], PIECES, MAX_TOKENS)
    env = MultiTurnEnv(**{**long_grid_world_defaults("train"), "model": None, "tokenizer": tokenizer})
    next_turn = walker(rng, args.skill)
    rows = [play(env, next_turn, rng.randrange(10**6)) for _ in range(args.episodes)]
    data, labels = as_batchable(rows, tokenizer.pad_token_id)
    lengths = torch.tensor([len(row.ids) for row in rows])
    print(f"{len(rows)} walks (the scripted walker's mean return {np.mean([r.episode_return for r in rows]):.3f}), "
          f"{int(lengths.min())}-{int(lengths.max())} tokens, vocab {len(tokenizer)}", flush=True)
    model = small_gpt2(tokenizer, MAX_TOKENS, n_embd=64, n_layer=2)
    generator = torch.Generator().manual_seed(args.seed)

    def batch_loss(step: int) -> torch.Tensor:
        if step > args.crop_steps:  # whole walks (right-padded: causal attention never reads the padding)
            index = torch.randint(len(rows), (args.batch_size // 8,), generator=generator)
            width = int(lengths[index].max())
            return model(input_ids=data[index, :width], labels=labels[index, :width]).loss
        index = torch.randint(len(rows), (args.batch_size,), generator=generator)
        ends = args.crop + (torch.rand(args.batch_size, generator=generator) * (lengths[index] - args.crop + 1)).long()
        columns = ends[:, None] - args.crop + torch.arange(args.crop)
        return model(input_ids=data[index[:, None], columns], position_ids=columns,
                     labels=labels[index[:, None], columns]).loss

    held_out = MultiTurnEnv(**{**long_grid_world_defaults("test"), "model": None, "tokenizer": tokenizer})
    instances = [{"text_env_seed": i} for i in range(HELD_OUT_LAYOUTS)]
    steps, value = train_until_target(model, batch_loss, lambda: sampled_return(model, held_out, instances, 2),
                                      args.target, args.max_steps, args.check_every, lr=1e-3, what="return")
    save_bundled_lm(model, tokenizer, args.out, steps, "return", value)


if __name__ == "__main__":
    main()
