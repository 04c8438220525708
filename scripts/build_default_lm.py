"""Build the bundled offline default: a tokenizer, a tiny GPT-2 and the default prompts.

Everything is made here, offline and reproducibly (fixed seeds, one thread), from a synthetic corpus of
short movie reviews produced by the small grammar below. About half the reviews are positive and half
negative, so the resulting LM is an offline stand-in for GPT-2 on IMDB: it writes fluent-looking reviews
of either polarity, and RL can steer it toward positive ones.

    python scripts/build_default_lm.py            # rewrites lm_gym/assets/tiny-lm and the prompt files

The script needs torch, transformers and tokenizers (all runtime dependencies of lm-gym).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

ASSETS = Path(__file__).resolve().parent.parent / "lm_gym" / "assets"
EOS, PAD = "<|endoftext|>", "<pad>"

SUBJECTS = ["the movie", "this film", "the acting", "the plot", "the ending", "the story", "the cast",
            "the script", "the music", "the director", "the dialogue", "the first half", "the sequel"]
VERBS = ["was", "is", "felt", "seemed", "looked"]
POSITIVE = ["great", "wonderful", "brilliant", "beautiful", "fun", "amazing", "excellent", "charming",
            "delightful", "good", "enjoyable", "funny", "superb", "lovely", "fantastic"]
NEGATIVE = ["boring", "terrible", "awful", "dull", "bad", "weak", "painful", "horrible", "stupid",
            "disappointing", "messy", "ugly", "annoying", "poor", "sad"]
NEUTRAL = ["long", "quiet", "slow", "simple", "different", "short", "dark", "predictable", "loud", "old"]
INTENSIFIERS = ["", "", "", "very ", "really ", "quite ", "so ", "pretty ", "rather ", "truly "]
POSITIVE_CLOSERS = ["i loved it", "i would watch it again", "i laughed a lot", "highly recommended",
                    "a real treat", "my kids loved it", "it made my day", "worth every minute"]
NEGATIVE_CLOSERS = ["i hated it", "i want my money back", "i fell asleep", "avoid it",
                    "a waste of time", "i walked out", "never again", "what a mess"]
NEUTRAL_CLOSERS = ["i saw it on a plane", "it is out now", "i watched it twice", "it runs two hours"]

# Prompts are review openings that leave the polarity open; the held-out ones never appear in training.
TRAIN_PROMPTS = ["the movie was", "this film is", "i thought the acting", "honestly , the plot",
                 "the ending", "my friends said the cast", "overall the story", "i think the script",
                 "the music", "to be fair , the director", "the dialogue", "in the end the movie",
                 "the first half", "this film", "i watched it and the acting", "the sequel"]
EVAL_PROMPTS = ["the story was", "i felt the cast", "honestly , the music", "the script is",
                "overall the ending", "the director", "my friends said the plot", "the acting"]


def clause(rng: random.Random, mood: str) -> str:
    words = {"pos": POSITIVE, "neg": NEGATIVE, "neu": NEUTRAL}[mood]
    adjective = rng.choice(INTENSIFIERS) + rng.choice(words)
    if mood != "neu" and rng.random() < 0.25:
        adjective += " and " + rng.choice(words)
    return f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {adjective}"


def review(rng: random.Random) -> str:
    """One review: 1-3 sentences, mostly of one polarity, sometimes mixed with 'but'."""
    mood = rng.choice(["pos", "neg"])
    other = "neg" if mood == "pos" else "pos"
    sentences = [clause(rng, mood)]
    if rng.random() < 0.3:
        sentences[0] += " , but " + clause(rng, rng.choice([other, "neu"]))
    for _ in range(rng.randint(0, 2)):
        roll = rng.random()
        if roll < 0.5:
            sentences.append(clause(rng, mood if rng.random() < 0.8 else "neu"))
        else:
            closers = {"pos": POSITIVE_CLOSERS, "neg": NEGATIVE_CLOSERS}[mood]
            sentences.append(rng.choice(closers if roll < 0.9 else NEUTRAL_CLOSERS))
    opener = rng.choice(["", "", "", "honestly , ", "i think ", "overall ", "to be fair , ", "in the end ",
                         "my friends said ", "i thought ", "i watched it and "])
    return opener + " . ".join(sentences) + " ."


def build_tokenizer(corpus: list[str], vocab_size: int, individual_digits: bool = False) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on ``corpus``; ``individual_digits``: every digit a token of its own (no merges), so
    numbers are spelled digit by digit, the same wherever they appear."""
    tokenizer = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level]) \
        if individual_digits else byte_level
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS, PAD],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=EOS, eos_token=EOS, unk_token=EOS,
                                   pad_token=PAD, model_max_length=64)


def save_portable_tokenizer(tokenizer: PreTrainedTokenizerFast, out: Path) -> None:
    """Save the tokenizer so that every supported transformers loads it: transformers 5 records its class as
    ``TokenizersBackend``, which 4.x does not know; ``PreTrainedTokenizerFast`` names the same tokenizer in both."""
    tokenizer.save_pretrained(out)
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(config, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ASSETS)
    parser.add_argument("--reviews", type=int, default=40_000)
    parser.add_argument("--steps", type=int, default=3_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)  # bit-for-bit reproducible on CPU
    corpus = [review(rng) for _ in range(args.reviews)]
    tokenizer = build_tokenizer(corpus, vocab_size=512)

    config = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=64, n_layer=2, n_head=4,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    model = GPT2LMHeadModel(config)
    # Each review ends in EOS, so the LM learns to stop; reviews are packed into 64-token rows.
    ids = [t for text in corpus for t in tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]]
    data = torch.tensor(ids[: len(ids) // 64 * 64]).view(-1, 64)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=args.steps)
    model.train()
    for step in range(args.steps):
        batch = data[torch.randint(len(data), (32,))]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 500 == 0 or step == args.steps - 1:
            print(f"step {step:5d}  loss {loss.item():.3f}")

    out = args.out / "tiny-lm"
    model.eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    save_portable_tokenizer(tokenizer, out)
    (args.out / "prompts_train.txt").write_text("\n".join(TRAIN_PROMPTS) + "\n")
    (args.out / "prompts_eval.txt").write_text("\n".join(EVAL_PROMPTS) + "\n")
    print(f"saved {sum(p.numel() for p in model.parameters()):,} parameters, vocab {len(tokenizer)} to {out}")


if __name__ == "__main__":
    main()
