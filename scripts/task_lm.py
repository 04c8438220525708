"""What the build scripts of the bundled task LMs share: a small word-level tokenizer, scripted games played
through the token-level env, the pre-training loop (train until a sampled held-out score reaches a target) and
saving.

Stopping at a target (not at convergence) is the point: each task's LM knows the format and part of the task, so
RL starts clearly between 0 and the optimum.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from build_default_lm import save_portable_tokenizer
from agents.lm.kv_cache import RolloutKVCache
from lm_gym.multiturn import MultiTurnEnv

EOS, PAD = "<|endoftext|>", "<pad>"


def word_level_tokenizer(texts: Sequence[str], pattern: str, max_length: int) -> PreTrainedTokenizerFast:
    """One token per piece that ``pattern`` (a regex) isolates in ``texts`` (every piece seen gets an id), plus EOS
    (also BOS and UNK) and pad. With single digits as pieces, every number is spelled the same way wherever it
    appears, which is what copying a number (a tool's result, a coordinate) needs."""
    pieces = sorted({piece for text in texts for piece in re.findall(pattern, text)})
    vocab = {piece: i for i, piece in enumerate(pieces)} | {EOS: len(pieces), PAD: len(pieces) + 1}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=EOS))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=EOS, eos_token=EOS, unk_token=EOS,
                                   pad_token=PAD, model_max_length=max_length)


def build_arguments(description: str, out: Path, target: float, what: str, episodes: int, episodes_help: str,
                    check_every: int = 250) -> argparse.ArgumentParser:
    """The flags every task-LM build script takes; the defaults are the ones its bundled LM was built with."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=out)
    parser.add_argument("--target", type=float, default=target, help=f"stop at this sampled held-out {what}")
    parser.add_argument("--episodes", type=int, default=episodes, help=episodes_help)
    parser.add_argument("--max-steps", type=int, default=20_000)
    parser.add_argument("--check-every", type=int, default=check_every)
    parser.add_argument("--seed", type=int, default=0)
    return parser


class Trace(NamedTuple):
    """A scripted episode: every id of the conversation, the positions of the agent's tokens, the return."""

    ids: list[int]
    agent_positions: list[int]
    episode_return: float


def play(env: MultiTurnEnv, next_turn: Callable[[MultiTurnEnv], str], seed: int,
         options: dict[str, Any] | None = None) -> Trace:
    """One scripted episode through the token-level env, so the LM learns exactly the token layout RL shows it.
    ``next_turn(env)`` writes each agent turn (a script may read ``env.text_env``'s state). The loss covers the
    agent's tokens only: the env's replies are context."""
    env.reset(seed=seed, options=options)
    agent_positions, done, total = [], False, 0.0
    while not done:
        for token in [*env.codec.encode(next_turn(env)), env.codec.end_id]:
            agent_positions.append(len(env._ids))
            _, reward, terminated, truncated, info = env.step(token)
            total += reward
            done = terminated or truncated
            if info["turn_end"] or done:  # the turn ended (the text, or max_turn_tokens)
                break
    return Trace(list(env._ids), agent_positions, total)


def as_batchable(rows: Sequence[Trace], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and labels that cover the agent's tokens only."""
    data = torch.full((len(rows), max(len(row.ids) for row in rows)), pad_id)
    labels = torch.full_like(data, -100)
    for i, (ids, agent, _) in enumerate(rows):
        data[i, : len(ids)] = torch.tensor(ids)
        labels[i, agent] = data[i, agent]
    return data, labels


@torch.no_grad()
def sampled_return(model: GPT2LMHeadModel, template: MultiTurnEnv, instances: Sequence[dict[str, Any]],
                   samples: int = 8, seed: int = 0) -> float:
    """Mean episode return on ``instances`` (reset options), each played ``samples`` times, sampling at
    temperature 1 (as RL samples) through copies of ``template`` and the rollout KV cache."""
    model.eval()
    torch.manual_seed(seed)
    envs = [template.__copy__() for _ in range(len(instances) * samples)]
    observations = [env.reset(seed=i, options=instances[i % len(instances)])[0] for i, env in enumerate(envs)]
    returns, done = np.zeros(len(envs)), np.zeros(len(envs), dtype=bool)
    cache = RolloutKVCache()
    while not done.all():
        batch = {k: torch.as_tensor(np.stack([o[k] for o in observations])) for k in observations[0]}
        logits, _ = cache(model, batch, template.action_space.n, weights_version=0, hidden=False)
        tokens = torch.multinomial(logits.softmax(-1), 1).squeeze(1).tolist()
        for i, env in enumerate(envs):
            if not done[i]:
                observations[i], reward, terminated, truncated, _ = env.step(tokens[i])
                returns[i] += reward
                done[i] = terminated or truncated
    model.train()
    return float(returns.mean())


def small_gpt2(tokenizer: PreTrainedTokenizerFast, n_positions: int, n_embd: int = 128, n_layer: int = 3,
               n_head: int = 4) -> GPT2LMHeadModel:
    """A freshly initialised GPT-2 sized for a bundled task (EOS doubles as BOS, as the tokenizers write it)."""
    return GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=n_positions, n_embd=n_embd,
                                      n_layer=n_layer, n_head=n_head, bos_token_id=tokenizer.eos_token_id,
                                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))


def random_batches(model: GPT2LMHeadModel, data: torch.Tensor, labels: torch.Tensor, pad_id: int, batch_size: int,
                   generator: torch.Generator) -> Callable[[int], torch.Tensor]:
    """``batch_loss(step)`` for :func:`train_until_target`: the LM loss on ``batch_size`` rows drawn at random."""
    def batch_loss(step: int) -> torch.Tensor:
        index = torch.randint(len(data), (batch_size,), generator=generator)
        return model(input_ids=data[index], attention_mask=(data[index] != pad_id).long(), labels=labels[index]).loss
    return batch_loss


def build_multi_turn_lm(tokenizer: PreTrainedTokenizerFast, rows: Sequence[Trace], held_out: MultiTurnEnv,
                        n_instances: int, n_positions: int, out: Path, target: float, max_steps: int,
                        check_every: int, seed: int, samples: int, batch_size: int, what: str) -> None:
    """The rest of a multi-turn task's build once its scripted traces are played: a :func:`small_gpt2` trained on
    the agent's tokens of ``rows`` until its sampled ``what`` on the ``n_instances`` held-out instances of
    ``held_out`` (``samples`` each) reaches ``target``; saved to ``out``."""
    data, labels = as_batchable(rows, tokenizer.pad_token_id)
    print(f"{len(rows)} traces (the scripted player's mean {what} {np.mean([r.episode_return for r in rows]):.3f}), "
          f"up to {data.shape[1]} tokens, vocab {len(tokenizer)}", flush=True)
    model = small_gpt2(tokenizer, n_positions)
    batch_loss = random_batches(model, data, labels, tokenizer.pad_token_id, batch_size,
                                torch.Generator().manual_seed(seed))
    instances = [{"text_env_seed": i} for i in range(n_instances)]
    steps, value = train_until_target(model, batch_loss, lambda: sampled_return(model, held_out, instances, samples),
                                      target, max_steps, check_every, lr=1e-3, what=what)
    save_bundled_lm(model, tokenizer, out, steps, what, value)


def train_until_target(model: GPT2LMHeadModel, batch_loss: Callable[[int], torch.Tensor], score: Callable[[], float],
                       target: float, max_steps: int, check_every: int, lr: float, what: str) -> tuple[int, float]:
    """AdamW steps on ``batch_loss(step)`` (gradients clipped at 1); every ``check_every`` steps ``score()`` (the
    sampled held-out ``what``) is printed, and training stops once it reaches ``target``. Returns (steps, score)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    model.train()
    value = 0.0
    for step in range(1, max_steps + 1):
        loss = batch_loss(step)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step % check_every == 0:
            value = score()
            print(f"step {step:5d}  loss {loss.item():.3f}  held-out sampled {what} {value:.3f}", flush=True)
            if value >= target:
                return step, value
    raise SystemExit(f"held-out {what} {value:.3f} never reached --target {target}")


def save_bundled_lm(model: GPT2LMHeadModel, tokenizer: PreTrainedTokenizerFast, out: Path, steps: int, what: str,
                    value: float) -> None:
    model.eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    save_portable_tokenizer(tokenizer, out)
    print(f"saved {sum(p.numel() for p in model.parameters()):,} parameters, vocab {len(tokenizer)} to {out} "
          f"after {steps} steps; held-out sampled {what} {value:.3f}")
