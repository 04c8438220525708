"""Recompute the sampled tokens' log-probs on the learner, with the update's own forward (RLlib PPO)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns

from agents.lm.kl import chosen_log_probs
from agents.rllib.segments import token_steps


class RecomputeLogProbs(ConnectorV2):
    """Learner connector: overwrite each step's ``ACTION_LOGP`` (what PPO's ratio divides by) with the log-prob
    the learner's full-sequence forward gives the sampled token.

    The env runners sample through the KV-cached path; under ``autocast_dtype="bfloat16"`` its rounding differs
    from the learner's forward, so the ratio is off 1 before any update. PPO is synchronous (runners sample
    with the weights the learner holds now), so recomputing is exact in intent; APPO and IMPALA learn from
    older policies' samples, whose log-probs V-trace needs as they were, and never get this connector.
    Runs before :class:`agents.rllib.kl.KLShaping`, which then reads the recomputed numbers.
    """

    def __init__(self, input_observation_space=None, input_action_space=None, *, batch_size: int = 512, **kwargs):
        super().__init__(input_observation_space, input_action_space, **kwargs)
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, *, rl_module, batch: dict[str, Any], episodes: list, shared_data: dict | None = None,
                 metrics=None, **kwargs) -> dict[str, Any]:
        module = rl_module[DEFAULT_MODULE_ID].unwrapped()
        steps = token_steps(self, episodes, shared_data)
        if steps is None:
            return batch
        recomputed = chosen_log_probs(lambda obs: module.logits_and_hidden(obs)[0], steps.observations, steps.actions,
                                      next(module.parameters()).device, self.batch_size)
        for (episode, n), log_probs in zip(steps.segments, steps.split(recomputed)):
            for key, values in ((Columns.ACTION_LOGP, log_probs), (Columns.ACTION_DIST_INPUTS, log_probs[:, None])):
                episode.set_extra_model_outputs(key=key, new_data=values, at_indices=slice(0, n))
        if metrics is not None:
            metrics.log_value((DEFAULT_MODULE_ID, "recomputed_log_prob_shift"),
                              float(np.abs(recomputed - steps.log_probs).mean()), window=1)
        return batch
