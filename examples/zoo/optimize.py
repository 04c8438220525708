"""RL Baselines3 Zoo's hyperparameter search (``-optimize``) over what matters for an LM policy.

The zoo's own PPO sampler draws MLP ``net_arch``, ``activation_fn``, ``gamma`` ... which the LM policy has no use
for. This script swaps in a sampler of the learning rate, the rollout size, the minibatch size and the epochs,
samples the KL coefficient (it lives in a callback, which the zoo's samplers cannot reach) per trial, and runs
the zoo's own ``train`` with the same command-line arguments:

    python examples/zoo/optimize.py --algo ppo --env TextGen-v0 --gym-packages lm_gym agents \\
        --conf-file examples/zoo/ppo.yml -optimize --n-trials 20 -n 16384 --eval-episodes 32

Needs ``pip install rl_zoo3`` (``lm-gym[zoo]``).
"""

from __future__ import annotations

from typing import Any

import optuna
from rl_zoo3 import hyperparams_opt
from rl_zoo3.exp_manager import ExperimentManager
from rl_zoo3.train import train

KL_CALLBACK = "agents.KLPenaltyCallback"


def sample_lm_ppo_params(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """PPO's arguments that matter for an LM (gamma stays 1: the reward is the episode's)."""
    return {
        "learning_rate": trial.suggest_float("learning_rate", 1e-5, 1e-3, log=True),
        "n_steps": trial.suggest_categorical("n_steps", [32, 64, 128]),
        "batch_size": trial.suggest_categorical("batch_size", [64, 128, 256]),
        "n_epochs": trial.suggest_categorical("n_epochs", [1, 2, 4, 8]),
    }


def with_sampled_kl_coef(objective):
    """Wrap ``ExperimentManager.objective`` so each trial's KLPenaltyCallback gets a sampled coefficient."""

    def sampled(self: ExperimentManager, trial: optuna.Trial) -> float:
        coef = trial.suggest_float("kl_coef", 1e-3, 0.3, log=True)
        others = [c for c in self.specified_callbacks if not (isinstance(c, dict) and KL_CALLBACK in c) and c != KL_CALLBACK]
        self.specified_callbacks = [*others, {KL_CALLBACK: {"coef": coef}}]
        return objective(self, trial)

    return sampled


hyperparams_opt.HYPERPARAMS_SAMPLER["ppo"] = sample_lm_ppo_params
ExperimentManager.objective = with_sampled_kl_coef(ExperimentManager.objective)

if __name__ == "__main__":
    train()
