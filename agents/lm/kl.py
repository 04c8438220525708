"""KL to the initial LM, per token, shared by both backends' reward shaping (and by evaluation).

The penalty subtracted from each token's reward is ``coef * kl`` with ``kl`` from :func:`kl_estimate`;
:class:`AdaptiveKLController` moves ``coef`` toward a target KL per episode.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn

from agents.lm.forward import next_token_logits

KL_ESTIMATORS = ("k1", "k3")


KL_HORIZON = 1_000  # episodes


class AdaptiveKLController:
    """Proportional controller of the KL coefficient toward a target KL per episode (Ziegler et al., 2019).

    After each rollout: ``coef *= 1 + clip(kl / target - 1, -0.2, 0.2) * n_episodes / horizon``.

    ``horizon`` counts **episodes** (samples), as Ziegler et al. and TRL's ``AdaptiveKLController`` count them
    (TRL passes its batch size of completions), so that the gain per completion is the same whatever the
    completion length. lm-gym's default is 1,000 episodes, not TRL's 10,000: TRL's default assumes batches of
    512 completions, where lm-gym's rollouts hold a few dozen (8 envs x 64 tokens = 32 episodes of 16 tokens),
    and 10,000 would move the coefficient by at most 0.06% per rollout.
    """

    def __init__(self, coef: float, target: float, horizon: float = KL_HORIZON):
        if target <= 0 or horizon <= 0:
            raise ValueError(f"target={target} and horizon={horizon} must be positive.")
        self.coef, self.target, self.horizon = coef, target, horizon

    def update(self, kl: float, n_episodes: float) -> None:
        """``kl``: the rollout's KL per episode; ``n_episodes``: how many episodes' worth of tokens it held."""
        error = float(np.clip(kl / self.target - 1.0, -0.2, 0.2))
        self.coef *= 1.0 + error * n_episodes / self.horizon


def episode_equivalents(tokens: int, ended_lengths: np.ndarray | list[int], running_lengths: np.ndarray | list[int]
                        ) -> float:
    """How many whole episodes the ``tokens`` of a rollout are worth, when its edges cut episodes.

    A rollout of fixed size starts in the middle of some episodes and stops in the middle of others; counting
    those parts as whole episodes makes "per episode" figures too low (by ~20% with 64-step rollouts of 16-token
    episodes). Here every part counts by its tokens: ``tokens`` divided by the mean full length of the episodes
    that ended in the rollout (their tokens in earlier rollouts included; every episode ends exactly once, so
    these are an unbiased sample of lengths). When none ended (episodes longer than a rollout), the longest
    running episode's length so far is the best bound.

    Args:
        tokens: the rollout's tokens (all envs).
        ended_lengths: full lengths of the episodes that ended in the rollout.
        running_lengths: lengths so far of the episodes still running at its end.
    """
    if len(ended_lengths):
        return tokens / float(np.mean(ended_lengths))
    return tokens / max(1.0, float(np.max(running_lengths, initial=1)))


def check_kl_arguments(coef: float, estimator: str) -> None:
    if coef < 0:
        raise ValueError(f"coef={coef}: the KL coefficient cannot be negative.")
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"estimator={estimator!r}: choose one of {KL_ESTIMATORS}.")


def kl_estimate(log_ratio: np.ndarray, estimator: str) -> np.ndarray:
    """Per-token KL samples from ``log p(token) - log q(token)``: ``"k1"`` is the log-ratio itself (unbiased),
    ``"k3"`` is ``(r - 1) - log r`` with ``r = q / p`` (never negative, lower variance)."""
    return log_ratio if estimator == "k1" else np.expm1(-log_ratio) + log_ratio


Batches = Iterable[tuple[slice | np.ndarray, dict[str, torch.Tensor]]]  # (flat step indices, their observations)


def window_batches(observations: dict[str, np.ndarray], device: torch.device | str, batch_size: int = 512) -> Batches:
    """Consecutive runs of ``batch_size`` rows of flat ``(N, W)`` window arrays, as tensors on ``device`` (an
    episode's steps, kept next to each other, then share forwards)."""
    n = len(next(iter(observations.values())))
    for start in range(0, n, batch_size):
        part = slice(start, start + batch_size)
        yield part, {key: torch.as_tensor(np.asarray(value[part]), device=device) for key, value in observations.items()}


@torch.no_grad()
def log_probs_in(logits_of: Callable[[dict[str, torch.Tensor]], torch.Tensor], batches: Batches,
                 actions: np.ndarray) -> np.ndarray:
    """``log softmax(logits_of(obs))[action]`` for N flat steps, computed batch by batch (windows or packed
    episodes: whatever ``logits_of`` takes); ``actions`` ``(N,)``."""
    actions = np.asarray(actions)
    out = np.empty(len(actions), dtype=np.float32)
    for part, obs in batches:
        chosen = torch.as_tensor(actions[part], device=obs["input_ids"].device).long().view(-1, 1)
        out[part] = logits_of(obs).log_softmax(-1).gather(1, chosen).squeeze(1).float().cpu().numpy()
    return out


def chosen_log_probs(logits_of: Callable[[dict[str, torch.Tensor]], torch.Tensor], observations: dict[str, np.ndarray],
                     actions: np.ndarray, device: torch.device | str, batch_size: int = 512) -> np.ndarray:
    """:func:`log_probs_in` for flat arrays of N window observations ``(N, W)``."""
    return log_probs_in(logits_of, window_batches(observations, device, batch_size), actions)


def reference_logits(reference: nn.Module, n_actions: int) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
    """The reference LM's next-token logits of a batch of observations (rows that continue one another, an
    episode's steps, share one forward; packed episodes run packed: see ``next_token_logits``)."""
    return lambda obs: next_token_logits(reference, obs, n_actions, hidden=False)[0]


def reference_log_probs(reference: nn.Module, observations: dict[str, np.ndarray], actions: np.ndarray,
                        n_actions: int, device: torch.device | str, batch_size: int = 512) -> np.ndarray:
    """``log q(action | observation)`` under the reference LM, for flat arrays of N observations ``(N, W)``."""
    return chosen_log_probs(reference_logits(reference, n_actions), observations, actions, device, batch_size)
