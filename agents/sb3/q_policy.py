"""DQN and QR-DQN policies whose Q-values are the LM's next-token logits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from gymnasium import spaces
from sb3_contrib.qrdqn.policies import QRDQNPolicy
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from stable_baselines3.dqn.policies import DQNPolicy
from torch import nn

from agents.lm.forward import check_token_observation, next_token_logits
from lm_gym.models import ModelRef, load_causal_lm, load_frozen_lm, save_pretrained


class LMQNetwork(BasePolicy):
    """Q-values from the LM's next-token logits, in dueling form: ``Q(s, a) = V(s) + log_softmax(logits(s))[a]``.

    Shifting logits by a per-state constant changes neither the greedy token nor softmax(Q), so Q ranks
    tokens exactly as the LM does, and softmax(Q) is the LM's distribution. The shift is what raw logits
    lack: a linear ``value_head`` on the last hidden state gives V(s) (zero at start), so TD targets
    ``r + max Q(s')`` train V to the return and move a token's log-prob only by its advantage.

    With ``n_quantiles`` (QR-DQN) the head gives one V per quantile, shared by all tokens. A QR-DQN head of
    its own (``hidden x n_quantiles x vocab``) would hold 653M parameters at GPT-2's 50,257 tokens.

    Returns ``(B, n_actions)`` Q-values, or ``(B, n_quantiles, n_actions)`` quantiles.
    """

    def __init__(self, observation_space: spaces.Dict, action_space: spaces.Discrete, model: ModelRef = None,
                 dtype: str | None = None, n_quantiles: int | None = None, **kwargs: Any):
        super().__init__(observation_space, action_space, **kwargs)
        self.model_name, self.lm_dtype, self.n_quantiles = model, dtype, n_quantiles
        self.lm = load_causal_lm(model, dtype=dtype)
        self.value_head = nn.Linear(self.lm.get_input_embeddings().embedding_dim, n_quantiles or 1,
                                    dtype=self.lm.dtype)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    def forward(self, obs: PyTorchObs) -> torch.Tensor:
        check_token_observation(obs, self.lm)
        logits, hidden = next_token_logits(self.lm, obs, int(self.action_space.n))
        values = self.value_head(hidden.to(self.value_head.weight.dtype)).float()  # (B, 1 or n_quantiles)
        log_probs = logits.log_softmax(-1)
        if self.n_quantiles is None:
            return values + log_probs
        return values.unsqueeze(-1) + log_probs.unsqueeze(1)

    def _predict(self, observation: PyTorchObs, deterministic: bool = True) -> torch.Tensor:
        """Greedy when deterministic; otherwise a sample from softmax(Q), i.e. from the LM's distribution.

        SB3's off-policy loop asks for non-deterministic actions while collecting: Boltzmann exploration
        over the vocabulary, where epsilon-greedy would almost never try the token that matters.
        """
        q_values = self(observation)
        if self.n_quantiles is not None:
            q_values = q_values.mean(dim=1)
        if deterministic:
            return q_values.argmax(dim=1).reshape(-1)
        return torch.distributions.Categorical(logits=q_values).sample().reshape(-1)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(model=self.model_name, dtype=self.lm_dtype, n_quantiles=self.n_quantiles)
        return data


class LMQPolicyMixin:
    """What both Q policies share: the LM by name or path, its Q-network, and export to Hugging Face.

    Args:
        model: Hugging Face name or local path of the causal LM (``None``: the bundled tiny LM).
        dtype: weight dtype of the LM.
    """

    def __init__(self, observation_space: spaces.Dict, action_space: spaces.Discrete, lr_schedule: Schedule,
                 model: ModelRef = None, dtype: str | None = None, **kwargs: Any):
        self.model_name, self.lm_dtype = None if model is None else str(model), dtype
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def lm_q_network(self, n_quantiles: int | None = None) -> LMQNetwork:
        return LMQNetwork(self.observation_space, self.action_space, self.model_name, self.lm_dtype,
                          n_quantiles=n_quantiles).to(self.device)

    @torch.no_grad()
    def token_distribution(self, obs: PyTorchObs) -> torch.distributions.Categorical:
        """softmax(Q) over the next token: the LM's distribution shifted by what the Q-values learned."""
        q_values = self.q_net(obs) if hasattr(self, "q_net") else self.quantile_net(obs)
        return torch.distributions.Categorical(logits=q_values.mean(1) if q_values.dim() == 3 else q_values)

    def load_reference_model(self) -> nn.Module:
        """A frozen copy of the initial LM on this policy's device, for KL terms."""
        return load_frozen_lm(self.model_name, self.device, dtype=self.lm_dtype)

    def save_pretrained(self, path: str | Path, overwrite: bool = False) -> Path:
        """Save the online network's LM and its tokenizer in Hugging Face format; refuses a non-empty directory."""
        return save_pretrained(self.lm, self.model_name, path, overwrite)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(model=self.model_name, dtype=self.lm_dtype)
        return data


class LMDQNPolicy(LMQPolicyMixin, DQNPolicy):
    """SB3 DQN policy with an :class:`LMQNetwork` (and a target copy): ``DQN(LMDQNPolicy, env)``."""

    def make_q_net(self) -> LMQNetwork:
        return self.lm_q_network()

    @property
    def lm(self):
        return self.q_net.lm


class LMQRDQNPolicy(LMQPolicyMixin, QRDQNPolicy):
    """sb3-contrib QR-DQN policy with an :class:`LMQNetwork` of ``n_quantiles``: ``QRDQN(LMQRDQNPolicy, env)``."""

    def make_quantile_net(self) -> LMQNetwork:
        return self.lm_q_network(self.n_quantiles)

    @property
    def lm(self):
        return self.quantile_net.lm
