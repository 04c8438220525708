"""Per-token KL-to-reference reward shaping for RLlib, with the semantics and names of KLPenaltyCallback.

:class:`KLShaping` is a learner connector: before GAE (PPO) or V-trace (APPO, IMPALA) read the rewards, it
scores every (observation, token) of the incoming episodes with the frozen initial LM and subtracts
``coef * KL`` from each token's reward. The coefficient lives in the module (``LMRLModule.kl_coef``, a
buffer: checkpointed with the weights, equal on every learner); :class:`KLControllerCallback` moves it
toward ``target`` on the driver after each iteration, from the KL reduced over all learners.
Logged per iteration under the learner results: ``kl/per_token``, ``kl/per_episode``, ``kl/coef``,
``kl/penalty_per_episode``; the env runners' episode returns stay the task reward.
"""

from __future__ import annotations

import contextlib
from typing import Any

import gymnasium as gym
import numpy as np
from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core import DEFAULT_MODULE_ID

from agents.lm.kl import KL_HORIZON, AdaptiveKLController, check_kl_arguments, episode_equivalents, kl_estimate, \
    reference_log_probs
from agents.rllib.segments import token_steps


class KLShaping(ConnectorV2):
    """Learner connector: ``reward -= kl_coef * KL(policy || initial LM)`` for every generated token.

    Args:
        estimator: ``"k1"`` or ``"k3"`` (see :func:`agents.lm.kl.kl_estimate`).
        batch_size: observations per reference forward.
    """

    def __init__(self, input_observation_space=None, input_action_space=None, *, estimator: str = "k1",
                 batch_size: int = 512, **kwargs):
        super().__init__(input_observation_space, input_action_space, **kwargs)
        check_kl_arguments(0.0, estimator)
        self.estimator, self.batch_size = estimator, batch_size
        self.reference = None

    def __call__(self, *, rl_module, batch: dict[str, Any], episodes: list, shared_data: dict | None = None,
                 metrics=None, **kwargs) -> dict[str, Any]:
        module = rl_module[DEFAULT_MODULE_ID].unwrapped()
        coef = float(module.kl_coef)
        if self.reference is None:  # with LoRA: the same LM with adapters off; else a frozen copy, on this learner
            self.reference = module.load_reference_model()
        steps = token_steps(self, episodes, shared_data)
        if steps is None:
            return batch
        device = next(module.parameters()).device
        reference = reference_log_probs(self.reference, steps.observations, steps.actions, module.n_actions, device,
                                        self.batch_size)
        kl = kl_estimate(steps.log_probs - reference, self.estimator)
        segments = steps.segments
        with quiet_gymnasium():  # set_rewards checks each scalar reward with Box.contains, which warns on scalars
            for (episode, n), token_kl in zip(segments, steps.split(kl)):
                rewards = np.asarray(episode.get_rewards(indices=slice(0, n)), dtype=np.float32)
                episode.set_rewards(new_data=rewards - coef * token_kl, at_indices=slice(0, n))
        if metrics is not None:
            # Segments are episodes or the parts of them in this batch: count the parts by their tokens. A chunk's
            # t_started is the number of its episode's steps in earlier chunks. An episode has ended when it was
            # terminated or truncated (a multi-turn env's max_turns, a full window), as on the SB3 side.
            ended = [episode.t_started + n for episode, n in segments if episode.is_done]
            running = [episode.t_started + n for episode, n in segments if not episode.is_done]
            tokens = sum(n for _, n in segments)
            n_episodes = episode_equivalents(tokens, ended, running)
            per_episode, episode_length = float(kl.sum() / n_episodes), tokens / n_episodes
            for name, value in (("kl/per_token", float(kl.mean())), ("kl/per_episode", per_episode),
                                ("kl/coef", coef), ("kl/penalty_per_episode", coef * per_episode),
                                ("kl/episode_length", episode_length)):
                metrics.log_value((DEFAULT_MODULE_ID, name), value, window=1)
        return batch


@contextlib.contextmanager
def quiet_gymnasium():
    level = gym.logger.min_level
    gym.logger.min_level = gym.logger.ERROR
    try:
        yield
    finally:
        gym.logger.min_level = level


class KLControllerCallback(RLlibCallback):
    """After each iteration, moves ``kl_coef`` toward a target KL per episode and writes it to every learner.

    The adaptive rule is :class:`agents.lm.kl.AdaptiveKLController`'s (Ziegler et al., 2019), applied to the
    iteration's ``kl/per_episode`` as reduced over the learners; its step counts the iteration's episodes (env
    steps divided by ``kl/episode_length``), as the SB3 callback's does.
    """

    def __init__(self, target: float, horizon: float = KL_HORIZON):
        super().__init__()
        self.target, self.horizon = target, horizon
        self._last_steps = None

    def on_train_result(self, *, algorithm, metrics_logger=None, result: dict, **kwargs) -> None:
        learner = result.get("learners", {}).get(DEFAULT_MODULE_ID, {})
        if "kl/per_episode" not in learner:
            return
        steps = int(result.get("env_runners", {}).get("num_env_steps_sampled_lifetime", 0))
        new_steps = steps - (self._last_steps if self._last_steps is not None else 0)
        self._last_steps = steps
        controller = AdaptiveKLController(float(learner["kl/coef"]), self.target, self.horizon)
        episodes = max(new_steps, 0) / max(float(learner.get("kl/episode_length", 1.0)), 1.0)
        controller.update(float(learner["kl/per_episode"]), episodes)
        set_kl_coef(algorithm, controller.coef)


def set_kl_coef(algorithm, coef: float) -> None:
    """Write the KL coefficient into the module on every learner (and so, with the next weight sync, on the
    env runners and in the next checkpoint)."""
    def write(learner, value=float(coef)):
        learner.module[DEFAULT_MODULE_ID].unwrapped().kl_coef.fill_(value)

    algorithm.learner_group.foreach_learner(write)
