"""The RLlib algorithms lm-gym trains TextGen-v0 with, and the config that puts LMRLModule into each.

``rllib_config("ppo", env_config, ...)`` returns a ready ``AlgorithmConfig`` (``.build_algo()`` trains it).
Hyperparameters are named once, here; the knobs shared with the SB3 backend mean the same there and here:
a rollout is ``n_steps`` steps of every env, ``batch_size`` is PPO's minibatch, ``gamma`` is 1 (a completion
is one episode, its score the final reward).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig
from ray.rllib.algorithms.appo import APPOConfig
from ray.rllib.algorithms.impala import IMPALAConfig
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.tune.registry import register_env

from agents.lm.actor_critic import check_precision
from agents.lm.kl import KL_HORIZON, AdaptiveKLController, check_kl_arguments
from agents.rllib.kl import KLControllerCallback, KLShaping
from agents.rllib.log_probs import RecomputeLogProbs
from agents.rllib.module import LMRLModule
from agents.rllib.transport import TokenDeltas, TokensToWindows, WindowsFromTokens

ENV_ID = "lm_gym/TextGen-v0"


def make_env(env_config: dict[str, Any]):
    """A TextGenEnv from ``env_config``, or a MultiTurnEnv when it names a ``text_env`` (a picklable callable or an id:
    it travels to the runners)."""
    import lm_gym  # env runners are separate processes that never imported it

    env_config = dict(env_config)  # RLlib passes an EnvContext
    if "text_env" in env_config:
        return lm_gym.MultiTurnEnv(**env_config)
    return lm_gym.TextGenEnv(**env_config)


def make_runner_env(env_config: dict[str, Any]) -> TokenDeltas:
    """The env creator RLlib calls on every env runner (its own process): :func:`make_env`'s env, emitting what each
    step added instead of its window (:mod:`agents.rllib.transport`)."""
    return TokenDeltas(make_env(env_config))


def register_text_gen_env() -> None:
    """Make ``ENV_ID`` known to Ray (needed before building, and before restoring an Algorithm checkpoint)."""
    register_env(ENV_ID, make_runner_env)


@dataclass(frozen=True)
class RLlibAlgorithmSpec:
    config_class: type[AlgorithmConfig]
    training: dict[str, Any] = field(default_factory=dict)
    asynchronous: bool = False  # samples on remote env runners while the learners train (needs >= 1 of them)


DEFAULT_N_STEPS = 64  # env steps per env per rollout, as the SB3 backend's on-policy default
# RLlib's sampling and restart settings, set here rather than left to RLlib's defaults (Ray 2.60's, except the
# restart delay, 60 s there): a sample request waits at most 60 s for an env runner before the iteration goes on
# with what the others returned; a runner that crashes or stops answering its health probe (30 s) is restarted
# after 5 s, up to 1,000 times; one that hangs without dying is what lm-gym's stall watchdog catches
# (agents.runs.watchdog).
FAULT_TOLERANCE = dict(restart_failed_env_runners=True, max_num_env_runner_restarts=1000,
                       delay_between_env_runner_restarts_s=5.0, env_runner_health_probe_timeout_s=30.0)
SAMPLE_TIMEOUT_S = 60.0
SHARED = dict(lr=1e-4, gamma=1.0, entropy_coeff=0.0, vf_loss_coeff=0.5)
RLLIB_ALGORITHMS: dict[str, RLlibAlgorithmSpec] = {
    # KL to the previous policy (use_kl_loss) needs the logits of every stored step: off (see LMRLModule).
    # Minibatches in the train batch's episode order, so one forward covers an episode's steps.
    "ppo": RLlibAlgorithmSpec(PPOConfig, dict(SHARED, lambda_=0.95, num_epochs=4, minibatch_size=128, clip_param=0.2,
                                              use_kl_loss=False, shuffle_batch_per_epoch=False)),
    # V-trace off-policy correction; APPO adds PPO's clipped ratio against a target copy of the LM.
    "appo": RLlibAlgorithmSpec(APPOConfig, dict(SHARED, use_kl_loss=False), asynchronous=True),
    "impala": RLlibAlgorithmSpec(IMPALAConfig, dict(SHARED), asynchronous=True),
}


def rllib_config(name: str, env_config: dict[str, Any], model_config: dict[str, Any] | None = None, *,
                 n_steps: int | None = None, batch_size: int | None = None, n_epochs: int | None = None,
                 learning_rate: float | None = None, lr_decay_steps: int | None = None,
                 num_env_runners: int = 2, num_envs_per_env_runner: int = 4,
                 num_learners: int = 0, num_gpus_per_learner: float = 0, seed: int | None = None,
                 kl_coef: float = 0.0, kl_target: float | None = None, kl_horizon: float = KL_HORIZON,
                 kl_estimator: str = "k1", recompute_log_probs: bool | None = None) -> AlgorithmConfig:
    """RLlib algorithm ``name`` on TextGen-v0 (``env_config``: TextGenEnv arguments) with :class:`LMRLModule`
    (``model_config``: its arguments), sampling ``num_env_runners x num_envs_per_env_runner`` envs.

    ``lr_decay_steps``: the learning rate decays linearly to 0 over that many env steps (RLlib's piecewise
    schedule, ``lr=[[0, rate], [steps, 0]]``). ``kl_coef`` / ``kl_target`` turn on KL shaping (fixed, or
    adaptive toward ``kl_target`` nats per episode). ``recompute_log_probs`` (PPO only; ``None``: on under
    ``autocast_dtype``) recomputes the sampled tokens' log-probs on the learner
    (:class:`agents.rllib.log_probs.RecomputeLogProbs`). ``None`` keeps an algorithm's default. Check resources
    with :func:`check_resources` before building.
    """
    if name not in RLLIB_ALGORITHMS:
        raise ValueError(f"algo={name!r} is not an RLlib algorithm of lm-gym; choose one of {sorted(RLLIB_ALGORITHMS)}.")
    spec = RLLIB_ALGORITHMS[name]
    check_module_config(model_config or {})
    register_text_gen_env()
    envs = max(1, num_env_runners) * num_envs_per_env_runner
    n_steps = n_steps or DEFAULT_N_STEPS
    training = dict(spec.training, train_batch_size_per_learner=n_steps * envs // max(1, num_learners))
    if learning_rate is not None:
        training["lr"] = learning_rate
    if lr_decay_steps is not None:
        training["lr"] = [[0, training["lr"]], [lr_decay_steps, 0.0]]
    if name == "ppo":
        training.update({k: v for k, v in (("minibatch_size", batch_size), ("num_epochs", n_epochs)) if v is not None})
    elif batch_size is not None or n_epochs is not None:
        raise ValueError(f"batch_size and n_epochs do not apply to algo={name!r}: it learns from each batch of "
                         "n_steps x envs steps once.")
    check_kl_arguments(kl_coef, kl_estimator)
    if kl_target is not None:
        AdaptiveKLController(kl_coef, kl_target, kl_horizon)  # refuses a target or horizon that is not positive
    if recompute_log_probs is None:
        recompute_log_probs = name == "ppo" and (model_config or {}).get("autocast_dtype") is not None
    if recompute_log_probs and name != "ppo":
        raise ValueError(f"recompute_log_probs with algo={name!r}: it learns from older policies' samples, and "
                         "V-trace needs their log-probs as they were sampled; only ppo recomputes them.")
    shaping = kl_coef > 0 or kl_target is not None
    training["learner_connector"] = functools.partial(_learner_connectors, recompute=recompute_log_probs,
                                                      kl_estimator=kl_estimator if shaping else None)
    config = (spec.config_class()
              .environment(ENV_ID, env_config=env_config)
              .env_runners(num_env_runners=num_env_runners, num_envs_per_env_runner=num_envs_per_env_runner,
                           env_to_module_connector=_env_to_module_connectors,
                           rollout_fragment_length="auto" if name == "ppo" else n_steps,
                           sample_timeout_s=SAMPLE_TIMEOUT_S)
              .fault_tolerance(**FAULT_TOLERANCE)
              .learners(num_learners=num_learners, num_gpus_per_learner=num_gpus_per_learner)
              .rl_module(rl_module_spec=RLModuleSpec(module_class=LMRLModule,
                                                     model_config={**(model_config or {}), "kl_coef": kl_coef}))
              .training(**training)
              # One iteration = one update: the caller's step budget and progress stay exact.
              .reporting(min_time_s_per_iteration=0, min_sample_timesteps_per_iteration=0)
              .debugging(seed=seed, log_level="ERROR"))
    if kl_target is not None:
        config.callbacks(functools.partial(KLControllerCallback, target=kl_target, horizon=kl_horizon))
    return config


def check_module_config(model_config: dict[str, Any]) -> None:
    """The SB3 policy's precision rules, plus RLlib's own limit, checked here on the driver: RLlib builds the
    module in its env-runner processes first, where an error would surface as an unrelated one."""
    check_precision(model_config.get("dtype"), model_config.get("autocast_dtype"), model_config.get("lora"))
    if model_config.get("dtype") == "bfloat16":
        raise ValueError("dtype='bfloat16' does not work with the RLlib backend: RLlib ships module weights to the "
                         "env runners as numpy arrays, and numpy has no bfloat16. Use autocast_dtype='bfloat16' "
                         "(float32 weights, bf16 compute) or LoRA over a dtype='float16' base (frozen, half the memory).")


def _env_to_module_connectors(env=None, spaces=None, device=None) -> list[ConnectorV2]:
    return [WindowsFromTokens()]


def _learner_connectors(input_observation_space, input_action_space, recompute: bool, kl_estimator: str | None
                        ) -> list[ConnectorV2]:
    """lm-gym's learner connectors, in order: the windows rebuilt from the episodes' tokens, the log-prob recompute
    (KL shaping reads the log-probs), KL shaping."""
    connectors: list[ConnectorV2] = [TokensToWindows(input_observation_space, input_action_space)]
    if recompute:
        connectors.append(RecomputeLogProbs(input_observation_space, input_action_space))
    if kl_estimator is not None:
        connectors.append(KLShaping(input_observation_space, input_action_space, estimator=kl_estimator))
    return connectors


def check_resources(name: str, num_env_runners: int, num_learners: int, num_gpus_per_learner: float,
                    cpus: float, gpus: float) -> None:
    """Refuse, before anything starts, what the Ray cluster (``cpus``, ``gpus``) cannot run or the algorithm
    cannot use: RLlib would otherwise wait forever for actors it cannot place."""
    if name in RLLIB_ALGORITHMS and RLLIB_ALGORITHMS[name].asynchronous and num_env_runners < 1:
        raise ValueError(f"algo={name!r} samples asynchronously on remote env runners while it learns: "
                         "num_env_runners must be at least 1 (--num-env-runners 1).")
    wanted_gpus = max(1, num_learners) * num_gpus_per_learner
    if wanted_gpus > gpus:
        raise ValueError(f"num_learners={num_learners} x num_gpus_per_learner={num_gpus_per_learner} asks for "
                         f"{wanted_gpus:g} GPUs but the Ray cluster has {gpus:g}; lower --num-gpus-per-learner "
                         "or --num-learners, or connect to a cluster with more GPUs (--ray-address).")
    wanted_cpus = num_env_runners + num_learners  # one CPU per env runner and per remote learner
    if wanted_cpus > cpus:
        raise ValueError(f"num_env_runners={num_env_runners} + num_learners={num_learners} need {wanted_cpus} CPUs "
                         f"(one each) but the Ray cluster has {cpus:g}; lower them, raise --num-envs-per-env-runner "
                         "instead (envs share a runner's CPU), or connect to a bigger cluster (--ray-address).")


def trained_module(algorithm: Algorithm) -> LMRLModule:
    """The learners' module as it is now, on the driver: the local env runner's copy, synced from the learners
    first (PPO syncs it every iteration, APPO and IMPALA only their remote runners). For reports and exports:
    ``trained_module(algo).save_pretrained("my-lm")``."""
    algorithm.env_runner_group.sync_weights(from_worker_or_learner_group=algorithm.learner_group, to_worker_indices=[],
                                            inference_only=True)
    return algorithm.get_module(DEFAULT_MODULE_ID)
