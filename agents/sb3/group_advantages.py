"""Critic-free advantages for stock PPO: GRPO, Dr. GRPO, RLOO and REINFORCE with a batch-mean baseline.

These methods replace the critic by a baseline from other samples: the other completions of the same prompt
(a *group*, see ``lm_gym.make_vec_env(group_size=G)``) or the whole batch. Everything else is PPO's: the
same clipped objective, epochs and minibatches. :class:`GroupAdvantageCallback` overwrites the advantages of
SB3's rollout buffer once a rollout is collected; with ``vf_coef=0`` no value head is trained.

Per episode ``i`` of a group ``g`` with outcome rewards ``r`` (``G`` members, ``std`` with Bessel's
correction as in TRL):

============  ================================================  ====================================
estimator     outcome advantage ``A_i``                         reference
============  ================================================  ====================================
grpo          ``(r_i - mean_g(r)) / (std_g(r) + 1e-4)``         Shao et al. 2024 (DeepSeekMath)
dr_grpo       ``r_i - mean_g(r)``                               Liu et al. 2025 (Dr. GRPO)
rloo          ``r_i - mean_{j in g, j != i}(r_j)``              Ahmadian et al. 2024
reinforce     ``r_i - mean over the rollout's episodes of r``   Williams 1992, batch-mean baseline
============  ================================================  ====================================

Every token of episode ``i`` gets ``A_i``, plus, when ``KLPenaltyCallback`` shapes the rewards, its KL
penalty to go (``-coef * sum of KL from this token on``): the outcome gets the group baseline and the KL
stays per token, as OpenRLHF combines them. The two inputs are the rewards the env paid (recorded each step,
before SB3 adds ``gamma * V(terminal observation)`` to a truncated episode's last reward) and the penalty the KL
callback subtracted (``rollout_buffer.kl_penalties``): nothing the critic says reaches these advantages.
Dr. GRPO's other change, no per-sequence length normalisation, is already how SB3's PPO averages its loss (over
tokens).

Rollout edges: SB3 cuts rollouts every ``n_steps`` steps, not at episode ends. An episode that started in
the previous rollout or is still running at the end has lost part of its tokens, and a group with such a
member is incomplete; their tokens get advantage 0, so they add nothing to the policy gradient (no group is
ever scored on fewer than ``G`` members). Dropping them alone would bias the gradient toward short
completions: a group that spans ``S`` steps (from its first member's start to its last member's end) lies
whole inside a rollout of ``T = n_steps`` steps with probability ``(T - S + 1) / T`` (the cut falls at a
uniform phase), so long completions would be kept less often (measured: 82% of 1-2-token episodes, 74% of
16-token ones, n_envs 8, G 4, T 64). Every kept group's advantages (KL penalty to go included) are weighted by the inverse,
``T / (T - S + 1)`` (Horvitz-Thompson; capped at :data:`MAX_EDGE_WEIGHT`), which makes each completion's
expected weight 1 whatever its length (measured: within 2 points, ``tests/test_group_advantages.py``).
REINFORCE's single episodes get the same weight with ``S`` = their length. ``group/used_fraction`` logs the
share of tokens that count; ``n_steps`` of several episode lengths keeps it high (0.8-0.9 with the
registry's defaults).
"""

from __future__ import annotations

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

ESTIMATORS = ("grpo", "dr_grpo", "rloo", "reinforce")
GROUPED = ("grpo", "dr_grpo", "rloo")  # the ones whose baseline is the group
STD_EPS = 1e-4  # TRL's GRPO epsilon: a group with equal rewards gets advantage 0, not NaN
# Only groups spanning more than 3/4 of a rollout reach the cap (rare: check_group_setup asks for n_steps of at
# least twice the token budget); above it the weight's variance would cost more than the little bias it removes.
MAX_EDGE_WEIGHT = 4.0


def outcome_advantages(rewards: np.ndarray, groups: np.ndarray, estimator: str) -> np.ndarray:
    """The advantage of each of ``E`` episodes from its outcome reward.

    Args:
        rewards: ``(E,)`` outcome rewards.
        groups: ``(E,)`` group id of each episode; every group must be complete (ignored by ``reinforce``).
        estimator: one of :data:`ESTIMATORS`.

    Returns:
        ``(E,)`` float64 advantages.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator={estimator!r}: choose one of {list(ESTIMATORS)}.")
    rewards = np.asarray(rewards, dtype=np.float64)
    if estimator == "reinforce":
        return rewards - rewards.mean() if len(rewards) else rewards
    advantages = np.empty_like(rewards)
    for group in np.unique(groups):
        members = groups == group
        r = rewards[members]
        if len(r) < 2:
            raise ValueError(f"{estimator}: group {group} has {len(r)} episode; a group baseline needs at least 2.")
        if estimator == "grpo":
            advantages[members] = (r - r.mean()) / (r.std(ddof=1) + STD_EPS)
        elif estimator == "dr_grpo":
            advantages[members] = r - r.mean()
        else:  # rloo: the mean of the other G - 1 members
            advantages[members] = r - (r.sum() - r) / (len(r) - 1)
    return advantages


class GroupAdvantageCallback(BaseCallback):
    """Replace PPO's GAE advantages by ``estimator``'s, once per rollout (see the module docstring).

    Use with stock ``PPO(..., vf_coef=0.0, normalize_advantage=False)`` on ``lm_gym.make_vec_env(group_size=G)``
    (``G >= 2`` for the group estimators), and list it *after* ``KLPenaltyCallback``, which recomputes GAE::

        PPO(...).learn(n, callback=[KLPenaltyCallback(coef=0.05), GroupAdvantageCallback("grpo")])

    ``agents.make_algorithm("grpo", ...)`` and ``lm-gym train --algo grpo`` set all of this up.

    Args:
        estimator: ``"grpo"``, ``"dr_grpo"``, ``"rloo"`` or ``"reinforce"``.
    """

    def __init__(self, estimator: str, verbose: int = 0):
        super().__init__(verbose)
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator={estimator!r}: choose one of {list(ESTIMATORS)}.")
        self.estimator = estimator

    def _on_training_start(self) -> None:
        check_group_setup(self.model, self.estimator)
        self.group_size = getattr(self.training_env.unwrapped, "group_size", 1)

    def _on_rollout_start(self) -> None:
        n_steps, n_envs = self.model.n_steps, self.training_env.num_envs
        self.model.rollout_buffer.kl_penalties = None  # KLPenaltyCallback sets this rollout's at its end
        self.step = 0
        self.task_rewards = np.zeros((n_steps, n_envs))  # as the env paid them, before any KL shaping
        self.ends = np.zeros((n_steps, n_envs), dtype=bool)  # an episode ended at this step
        self.groups = np.full((n_steps, n_envs), -1, dtype=np.int64)  # its group id, where one ended

    def _on_step(self) -> bool:
        if self.step < len(self.ends):
            # A copy, taken before SB3 adds the truncation bootstrap gamma * V(s_T) to the same array.
            self.task_rewards[self.step] = self.locals["rewards"]
            self.ends[self.step] = self.locals["dones"]
            for env, info in enumerate(self.locals["infos"]):
                self.groups[self.step, env] = info.get("group", -1)
            self.step += 1
        return True

    def _on_rollout_end(self) -> None:
        buffer = self.model.rollout_buffer
        n_steps = buffer.rewards.shape[0]
        episodes = complete_episodes(buffer.episode_starts.astype(bool), self.ends)
        outcomes = np.array([self.task_rewards[steps, env].sum() for env, steps in episodes])
        groups = np.array([self.groups[steps[-1], env] for env, steps in episodes], dtype=np.int64)
        if self.estimator not in GROUPED:  # each episode is its own unit for the edge weight
            groups = np.arange(len(episodes), dtype=np.int64)
        keep, weights = edge_weights(episodes, groups, self.group_size if self.estimator in GROUPED else 1, n_steps)
        episodes = [e for e, k in zip(episodes, keep) if k]
        advantages = outcome_advantages(outcomes[keep], groups[keep], self.estimator)

        # What KL shaping subtracted from each token (none without it), summed from each token to the episode end.
        kl_penalties = getattr(buffer, "kl_penalties", None)
        buffer.advantages[:] = 0.0
        for (env, steps), advantage, weight in zip(episodes, advantages, weights[keep]):
            penalty_to_go = 0.0 if kl_penalties is None else -np.cumsum(kl_penalties[steps, env][::-1])[::-1]
            buffer.advantages[steps, env] = weight * (advantage + penalty_to_go)
        buffer.returns[:] = buffer.advantages + buffer.values  # SB3's definition; unused with vf_coef=0

        self.used_fraction = sum(len(steps) for _, steps in episodes) / buffer.rewards.size
        self.logger.record("group/used_fraction", self.used_fraction)
        self.logger.record("group/episodes", len(episodes))
        self.logger.record("group/edge_weight_mean", float(weights[keep].mean()) if keep.any() else 0.0)
        if self.estimator in GROUPED and len(episodes):
            kept_outcomes, kept_groups = outcomes[keep], groups[keep]
            stds = [kept_outcomes[kept_groups == g].std() for g in np.unique(kept_groups)]
            self.logger.record("group/reward_std", float(np.mean(stds)))
            self.logger.record("group/zero_std_fraction", float(np.mean(np.array(stds) == 0)))


def edge_weights(episodes: list[tuple[int, np.ndarray]], groups: np.ndarray, group_size: int, n_steps: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Which complete episodes count, and the inverse-probability weight of their group (module docstring).

    Args:
        episodes: ``(env, step indices)`` of the episodes that start and end inside the rollout.
        groups: ``(E,)`` their group ids (one id per episode where the unit is a single episode).
        group_size: members a group needs to count (1: every episode counts).
        n_steps: the rollout's length ``T`` in steps.

    Returns:
        ``keep`` ``(E,)`` bool (its group is complete) and ``weights`` ``(E,)`` float64: ``T / (T - S + 1)``
        with ``S`` the group's span in steps, at most :data:`MAX_EDGE_WEIGHT`.
    """
    keep = np.zeros(len(episodes), dtype=bool)
    weights = np.zeros(len(episodes))
    for group in np.unique(groups):
        members = np.flatnonzero(groups == group)
        if len(members) != group_size:
            continue
        span = max(episodes[i][1][-1] for i in members) - min(episodes[i][1][0] for i in members) + 1
        keep[members] = True
        weights[members] = min(n_steps / (n_steps - span + 1), MAX_EDGE_WEIGHT)
    return keep, weights


def complete_episodes(starts: np.ndarray, ends: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """``(env, step indices)`` of every episode that both starts and ends inside the rollout.

    Args:
        starts: ``(n_steps, n_envs)`` bool, SB3's ``episode_starts`` (step ``t`` is the first of an episode).
        ends: ``(n_steps, n_envs)`` bool, step ``t`` is the last of an episode.
    """
    episodes = []
    for env in range(starts.shape[1]):
        start = None
        for t in range(starts.shape[0]):
            if starts[t, env]:
                start = t
            if ends[t, env]:
                if start is not None:
                    episodes.append((env, np.arange(start, t + 1)))
                start = None
    return episodes


def check_group_setup(model, estimator: str) -> None:
    """Refuse, before the first rollout, a setting under which ``estimator`` cannot work, naming the fix."""
    env = model.get_env()
    vec = env.unwrapped
    group_size = getattr(vec, "group_size", 1)
    if estimator in GROUPED and group_size < 2:
        raise ValueError(f"{estimator} compares completions of the same prompt: build the env with "
                         "lm_gym.make_vec_env(..., group_size=G), G >= 2 (lm-gym train --group-size G).")
    if any(mode == "dense" for mode in env.get_attr("reward_mode")):  # multi-turn envs' per-turn rewards sum up
        raise ValueError(f"{estimator} baselines the outcome of whole completions: it needs reward_mode='sparse' "
                         "(dense rewards pay partial scores along the way); drop reward_mode='dense'.")
    if getattr(model, "vf_coef", 0.0) != 0.0:
        raise ValueError(f"{estimator} has no critic: pass vf_coef=0.0 to PPO, so that no value head is trained.")
    if getattr(model, "normalize_advantage", False):
        raise ValueError(f"{estimator} sets the advantages' scale itself: pass normalize_advantage=False to PPO "
                         "(SB3 would re-normalise them per minibatch).")
    max_tokens = max(env.get_attr("max_new_tokens"))
    if model.n_steps < 2 * max_tokens:
        raise ValueError(f"n_steps={model.n_steps} < 2 x max_new_tokens={max_tokens}: a rollout could end with no "
                         f"complete episode in it, so no complete group; use n_steps >= {4 * max_tokens}.")
