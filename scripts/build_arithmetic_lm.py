"""Build TextGen-Arithmetic-v0's bundled LM: a character tokenizer and a small GPT-2 that half knows arithmetic.

Offline and reproducible (fixed seed, one thread). The LM is pre-trained on the *train* problems of
``lm_gym.arithmetic.arithmetic_problems`` written out with their answers (``"47+38=85<eos>"``), and stopped
early: at the first check where its sampled accuracy (temperature 1, as RL samples) on the 500 held-out
problems reaches ``--target`` (default 0.3). It has learned the format and much of the arithmetic, not all
of it, so RL starts from an accuracy clearly between 0.1 and 0.6 with room above it.

    python scripts/build_arithmetic_lm.py            # rewrites lm_gym/assets/arithmetic-lm

Needs torch, transformers and tokenizers (runtime dependencies of lm-gym).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from task_lm import random_batches, save_bundled_lm, small_gpt2, train_until_target  # noqa: E402
from lm_gym.arithmetic import ARITHMETIC_MODEL, arithmetic_problems  # noqa: E402

EOS, PAD = "<|endoftext|>", "<pad>"
CHARACTERS = "0123456789+-="
ROW = 16  # the longest example, "99+99=198<eos>", is 10 tokens


def build_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character: digits carry no BPE merges, so every number is spelled the same way."""
    vocab = {c: i for i, c in enumerate(CHARACTERS)} | {EOS: len(CHARACTERS), PAD: len(CHARACTERS) + 1}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=EOS))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=EOS, eos_token=EOS, unk_token=EOS,
                                   pad_token=PAD, model_max_length=ROW)


@torch.no_grad()
def sampled_accuracy(model: GPT2LMHeadModel, tokenizer: PreTrainedTokenizerFast, problems, seed: int = 0) -> float:
    """Exact-match accuracy of one sampled answer per problem (temperature 1, up to 4 new tokens)."""
    model.eval()
    tokenizer.padding_side = "left"
    batch = tokenizer([p.text for p in problems], return_tensors="pt", padding=True)
    torch.manual_seed(seed)
    out = model.generate(**batch, do_sample=True, top_k=0, max_new_tokens=4, pad_token_id=tokenizer.pad_token_id)
    answers = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    model.train()
    return sum(a.strip() == p.references[0] for a, p in zip(answers, problems)) / len(problems)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ARITHMETIC_MODEL)
    parser.add_argument("--target", type=float, default=0.3, help="stop at this sampled held-out accuracy")
    parser.add_argument("--max-steps", type=int, default=20_000)
    parser.add_argument("--check-every", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(1)  # bit-for-bit reproducible on CPU
    tokenizer = build_tokenizer()
    train, test = arithmetic_problems("train"), arithmetic_problems("test")
    rows = [tokenizer(p.text + p.references[0])["input_ids"] + [tokenizer.eos_token_id] for p in train]
    data = torch.full((len(rows), ROW), tokenizer.pad_token_id)
    labels = torch.full((len(rows), ROW), -100)  # the loss covers the answer and EOS only
    for i, ids in enumerate(rows):
        data[i, : len(ids)] = torch.tensor(ids)
        answer_start = len(tokenizer(train[i].text)["input_ids"])
        labels[i, answer_start: len(ids)] = data[i, answer_start: len(ids)]

    model = small_gpt2(tokenizer, ROW)
    batch_loss = random_batches(model, data, labels, tokenizer.pad_token_id, 64, torch.Generator().manual_seed(args.seed))

    steps, accuracy = train_until_target(model, batch_loss, lambda: sampled_accuracy(model, tokenizer, test),
                                         args.target, args.max_steps, args.check_every, lr=1e-3, what="accuracy")
    save_bundled_lm(model, tokenizer, args.out, steps, "accuracy", accuracy)


if __name__ == "__main__":
    main()
