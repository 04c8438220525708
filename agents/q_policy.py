"""DQN and QR-DQN policies whose Q-values are the LM's next-token logits."""

from __future__ import annotations

from typing import Any

import torch
from gymnasium import spaces
from sb3_contrib.qrdqn.policies import QRDQNPolicy
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from stable_baselines3.dqn.policies import DQNPolicy
from torch import nn

from agents.lm_forward import next_token_logits
from lm_gym.models import ModelRef, load_causal_lm


class LMQNetwork(BasePolicy):
    """Q(s, a) is the LM's logit of token ``a`` after prefix ``s``; greedy action = greedy decoding.

    With ``n_quantiles`` (QR-DQN), quantile ``k`` of Q(s, a) is ``logit(a) + offset_k(s)``: a linear head
    on the last hidden state gives ``n_quantiles`` offsets shared by all tokens. A QR-DQN head of its own
    (``hidden x n_quantiles x vocab``) would hold 653M parameters at GPT-2's 50,257 tokens.

    Returns ``(B, n_actions)`` Q-values, or ``(B, n_quantiles, n_actions)`` quantiles.
    """

    def __init__(self, observation_space: spaces.Dict, action_space: spaces.Discrete, model: ModelRef = None,
                 dtype: str | None = None, n_quantiles: int | None = None, **kwargs: Any):
        super().__init__(observation_space, action_space, **kwargs)
        self.model_name, self.lm_dtype, self.n_quantiles = model, dtype, n_quantiles
        self.lm = load_causal_lm(model, dtype=dtype)
        if n_quantiles is not None:
            self.quantile_offsets = nn.Linear(self.lm.get_input_embeddings().embedding_dim, n_quantiles,
                                              dtype=self.lm.dtype)
            nn.init.zeros_(self.quantile_offsets.weight)
            nn.init.zeros_(self.quantile_offsets.bias)

    def forward(self, obs: PyTorchObs) -> torch.Tensor:
        logits, hidden = next_token_logits(self.lm, obs, int(self.action_space.n))
        if self.n_quantiles is None:
            return logits
        offsets = self.quantile_offsets(hidden.to(self.quantile_offsets.weight.dtype)).float()
        return logits.unsqueeze(1) + offsets.unsqueeze(-1)

    def _predict(self, observation: PyTorchObs, deterministic: bool = True) -> torch.Tensor:
        q_values = self(observation)
        if self.n_quantiles is not None:
            q_values = q_values.mean(dim=1)
        return q_values.argmax(dim=1).reshape(-1)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(model=self.model_name, dtype=self.lm_dtype, n_quantiles=self.n_quantiles)
        return data


class LMDQNPolicy(DQNPolicy):
    """SB3 DQN policy with an :class:`LMQNetwork` (and a target copy): ``DQN(LMDQNPolicy, env)``.

    Args:
        model: Hugging Face name or local path of the causal LM (``None``: the bundled tiny LM).
        dtype: weight dtype of the LM.
    """

    def __init__(self, observation_space: spaces.Dict, action_space: spaces.Discrete, lr_schedule: Schedule,
                 model: ModelRef = None, dtype: str | None = None, **kwargs: Any):
        self.model_name, self.lm_dtype = None if model is None else str(model), dtype
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def make_q_net(self) -> LMQNetwork:
        return LMQNetwork(self.observation_space, self.action_space, self.model_name, self.lm_dtype).to(self.device)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(model=self.model_name, dtype=self.lm_dtype)
        return data


class LMQRDQNPolicy(QRDQNPolicy):
    """sb3-contrib QR-DQN policy with an :class:`LMQNetwork` of ``n_quantiles``: ``QRDQN(LMQRDQNPolicy, env)``."""

    def __init__(self, observation_space: spaces.Dict, action_space: spaces.Discrete, lr_schedule: Schedule,
                 model: ModelRef = None, dtype: str | None = None, **kwargs: Any):
        self.model_name, self.lm_dtype = None if model is None else str(model), dtype
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def make_quantile_net(self) -> LMQNetwork:
        return LMQNetwork(self.observation_space, self.action_space, self.model_name, self.lm_dtype,
                          n_quantiles=self.n_quantiles).to(self.device)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(model=self.model_name, dtype=self.lm_dtype)
        return data
