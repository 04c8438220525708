"""KL to the initial LM, per token, shared by both backends' reward shaping (and by evaluation).

The penalty subtracted from each token's reward is ``coef * kl`` with ``kl`` from :func:`kl_estimate`;
:class:`AdaptiveKLController` moves ``coef`` toward a target KL per episode.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from agents.lm.forward import next_token_logits

KL_ESTIMATORS = ("k1", "k3")


class AdaptiveKLController:
    """Proportional controller of the KL coefficient toward a target KL per episode (Ziegler et al., 2019).

    After each rollout: ``coef *= 1 + clip(kl / target - 1, -0.2, 0.2) * n_steps / horizon``.
    """

    def __init__(self, coef: float, target: float, horizon: int = 10_000):
        if target <= 0 or horizon <= 0:
            raise ValueError(f"target={target} and horizon={horizon} must be positive.")
        self.coef, self.target, self.horizon = coef, target, horizon

    def update(self, kl: float, n_steps: int) -> None:
        error = float(np.clip(kl / self.target - 1.0, -0.2, 0.2))
        self.coef *= 1.0 + error * n_steps / self.horizon


def check_kl_arguments(coef: float, estimator: str) -> None:
    if coef < 0:
        raise ValueError(f"coef={coef}: the KL coefficient cannot be negative.")
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"estimator={estimator!r}: choose one of {KL_ESTIMATORS}.")


def kl_estimate(log_ratio: np.ndarray, estimator: str) -> np.ndarray:
    """Per-token KL samples from ``log p(token) - log q(token)``: ``"k1"`` is the log-ratio itself (unbiased),
    ``"k3"`` is ``(r - 1) - log r`` with ``r = q / p`` (never negative, lower variance)."""
    return log_ratio if estimator == "k1" else np.expm1(-log_ratio) + log_ratio


@torch.no_grad()
def reference_log_probs(reference: nn.Module, observations: dict[str, np.ndarray], actions: np.ndarray,
                        n_actions: int, device: torch.device | str, batch_size: int = 512) -> np.ndarray:
    """``log q(action | observation)`` under the reference LM, for flat arrays of N observations ``(N, W)``.

    Rows that continue one another (an episode's steps) share one forward (see ``next_token_logits``).
    """
    out = np.empty(len(actions), dtype=np.float32)
    for start in range(0, len(actions), batch_size):
        part = slice(start, start + batch_size)
        obs = {key: torch.as_tensor(np.asarray(value[part]), device=device) for key, value in observations.items()}
        logits, _ = next_token_logits(reference, obs, n_actions, hidden=False)
        chosen = torch.as_tensor(np.asarray(actions[part]), device=device).long().view(-1, 1)
        out[part] = logits.log_softmax(-1).gather(1, chosen).squeeze(1).cpu().numpy()
    return out
