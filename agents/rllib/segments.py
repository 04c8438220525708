"""The token steps of the episodes a learner connector receives, as flat arrays (shared by lm-gym's connectors)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ray.rllib.core.columns import Columns

# RLlib's PPO and IMPALA learners append one bootstrap step to every episode before the custom connectors run
# and say so in shared_data under this key; that step is not a token the policy wrote.
BOOTSTRAP_STEP_ADDED = "_added_loss_mask_for_valid_episode_ts"


@dataclass
class TokenSteps:
    """Every (episode chunk, its number of real steps), and their observations, actions and sampling log-probs
    concatenated in that order (chunk by chunk, each in time order: an episode's steps stay next to each other,
    so rows that share a prefix share one forward)."""

    segments: list[tuple[object, int]]
    observations: dict[str, np.ndarray]
    actions: np.ndarray
    log_probs: np.ndarray

    def split(self, values: np.ndarray) -> list[np.ndarray]:
        """``values`` of all steps, cut back into one array per chunk."""
        return np.split(values, np.cumsum([n for _, n in self.segments])[:-1])


def token_steps(connector, episodes: list, shared_data: dict | None) -> TokenSteps | None:
    """The real (not bootstrap) steps of ``episodes``; None when there are none."""
    bootstrap = 1 if (shared_data or {}).get(BOOTSTRAP_STEP_ADDED) else 0
    segments = [(episode, len(episode) - bootstrap) for episode in
                connector.single_agent_episode_iterator(episodes, agents_that_stepped_only=False)]
    segments = [(episode, n) for episode, n in segments if n > 0]
    if not segments:
        return None
    observations = [episode.get_observations(indices=slice(0, n)) for episode, n in segments]
    return TokenSteps(
        segments,
        {key: np.concatenate([obs[key] for obs in observations]) for key in observations[0]},
        np.concatenate([episode.get_actions(indices=slice(0, n)) for episode, n in segments]),
        np.concatenate([episode.get_extra_model_outputs(key=Columns.ACTION_LOGP, indices=slice(0, n))
                        for episode, n in segments]).astype(np.float32))
