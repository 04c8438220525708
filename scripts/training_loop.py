"""The pre-training loop the bundled task LMs share: train until a sampled held-out score reaches a target, then save.

Stopping at a target (not at convergence) is the point: each task's LM knows the format and part of the task, so
RL starts clearly between 0 and the optimum.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast

from build_default_lm import save_portable_tokenizer


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
