"""The RLlib side of a run: Ray (local or a cluster), RLlib's PPO/APPO/IMPALA with LMRLModule, checkpoints, resume.

Needs ``pip install "lm-gym[rllib]"``; imported only when a run asks for ``backend="rllib"``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray
import torch
from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.rl_module.rl_module import RLModule
from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME

from agents.rllib import LMRLModule, check_resources, register_text_gen_env, rllib_config, trained_module
from agents.rllib.placement import cluster_placement, describe_placement
from agents.rllib.sampling_state import sampling_state, set_sampling_state
from agents.runs.checkpoints import CheckpointError, atomic_checkpoint, checkpoint_at
from agents.runs.interrupts import StopRequest, raised_by_signal, stop_at
from agents.runs.progress import Observer
from agents.runs.ray_auth import AUTH_ADVICE
from agents.runs.watchdog import StallWatchdog, TrainingStalled
from lm_gym.env import TextGenEnv
from lm_gym.prompts import Prompt

if TYPE_CHECKING:
    from agents.runs.config import TrainConfig

DEFAULT_ENV_RUNNERS = 2
SAMPLING_STATE = "sampling_state.pt"  # in a checkpoint, beside algorithm/ (agents.rllib.sampling_state)
STATE_TIMEOUT_S = 30.0  # env runners answer in milliseconds; a stalled one never does
CONNECT_TIMEOUT_S = 10.0  # a cluster's head answers in milliseconds; a wrong address never does
LOGGED_LEARNER_KEYS = ("policy_loss", "vf_loss", "entropy", "kl/per_token", "kl/per_episode", "kl/coef",
                       "kl/penalty_per_episode")
LEARNING_RATE_KEY = "default_optimizer_learning_rate"  # RLlib's name: the optimizer's, then "_learning_rate"
# metrics.jsonl's keys -> the tags SB3's logger gives the same quantities (entropy: SB3 logs the loss, -entropy).
SB3_TAGS = {"episode_return_mean": "rollout/ep_rew_mean", "policy_loss": "train/policy_gradient_loss",
            "vf_loss": "train/value_loss", "entropy": "train/entropy", "kl/per_token": "kl/per_token",
            "kl/per_episode": "kl/per_episode", "kl/coef": "kl/coef", "kl/penalty_per_episode": "kl/penalty_per_episode",
            "learning_rate": "train/learning_rate"}
MODULE_IN_CHECKPOINT = Path("learner_group", "learner", "rl_module", DEFAULT_MODULE_ID)


class RLlibTrainer:
    """Builds (or restores) RLlib's ``config.algo`` with :class:`agents.rllib.LMRLModule` and trains it.

    Ray: ``config.ray_address`` joins an existing cluster; otherwise a local Ray is started with this machine's
    CPUs (and GPUs), unless one is already running in this process. Resources are checked before anything is
    built. The policy used for held-out reports and the Hugging Face export is the learner's module.
    """

    final_files = ("algorithm",)

    def __init__(self, config: TrainConfig, eval_env: TextGenEnv, train_prompts: list[Prompt], run_dir: Path | None,
                 resume_from: Path | None = None):
        self.config, self.run_dir = config, run_dir
        logging.getLogger("ray.rllib").setLevel(logging.ERROR)  # RLlib's notes on its own API migration
        self.started_ray = start_ray(config.ray_address)
        resources = ray.cluster_resources()
        runners = rllib_resources(config, resources.get("GPU", 0))
        check_resources(config.algo, runners["num_env_runners"], runners["num_learners"],
                        runners["num_gpus_per_learner"], resources.get("CPU", 0), resources.get("GPU", 0))
        if resume_from is not None:
            register_text_gen_env()  # a fresh process: the checkpoint names the env, Ray must know its creator
            try:
                self.algorithm = Algorithm.from_checkpoint(str((resume_from / "algorithm").resolve()))
                saved = resume_from / SAMPLING_STATE
                if saved.exists():
                    set_sampling_state(self.algorithm, torch.load(saved, weights_only=False))
                else:
                    warnings.warn(f"{resume_from} has no {SAMPLING_STATE} (an older lm-gym wrote it, or a stall "
                                  "whose env runners did not answer): the env runners restart their random streams, "
                                  "so the run continues but does not reproduce an uninterrupted one.", stacklevel=2)
            except Exception as error:  # RLlib raises many kinds: name the checkpoint and the way out
                raise CheckpointError(f"cannot resume from {resume_from}: {type(error).__name__}: {error}. The "
                                      "checkpoint is corrupted or was made with another configuration; delete it "
                                      "to resume from the one before, or start a new run.") from error
        else:
            if config.task.multi_turn:
                env_config = config.env_kwargs("train")
            else:
                env_config = {**config.env_kwargs(), "prompts": train_prompts,
                              "max_prompt_tokens": eval_env.max_prompt_tokens}
            model_config = {k: v for k, v in (("model", config.lm), ("lora", config.lora), ("dtype", config.dtype),
                                              ("autocast_dtype", config.autocast_dtype)) if v is not None}
            algorithm_config = rllib_config(
                config.algo, env_config, model_config, seed=config.seed, kl_coef=config.kl_coef,
                kl_target=config.kl_target, recompute_log_probs=config.recompute_log_probs,
                lr_decay_steps=config.steps if config.lr_schedule == "linear" else None, **runners,
                **{k: v for k, v in config.algorithm_kwargs().items() if k != "policy_kwargs"})
            try:
                self.algorithm = algorithm_config.build_algo()
            except Exception:
                # RLlib builds the module in its env runners first; their error reaches us as an unrelated one
                # (an IndexError in get_spaces). Building it here raises the real one (model, window, LoRA...).
                LMRLModule(observation_space=eval_env.observation_space, action_space=eval_env.action_space,
                           model_config=model_config)
                raise
        policy = self.policy
        self.reference = policy.load_reference_model()
        self.device = str(next(policy.parameters()).device)
        self.resumed = resume_from is not None
        self.writer = _tensorboard_writer(run_dir)
        # Where the env runners and learners landed: printed at the start, recorded in summary.json.
        self.cluster = cluster_placement(self.algorithm)
        self.notes: list[str] = [describe_placement(self.cluster)]
        self._steps = int(self.algorithm.metrics.peek((ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), default=0))
        self._stalled = False  # set by learn() on a stall: close() then does not wait on hung env runners

    @property
    def policy(self) -> RLModule:
        """The learners' module as it is now, on the driver (see :func:`agents.rllib.trained_module`)."""
        return trained_module(self.algorithm)

    @property
    def num_timesteps(self) -> int:
        return self._steps

    def learn(self, total_steps: int, observers: Sequence[Observer] = (), stop: StopRequest | None = None,
              watchdog: StallWatchdog | None = None) -> None:
        """Run training iterations until ``total_steps`` env steps have been sampled; checkpoint on the way. Once
        ``stop()`` is true, checkpoint after the iteration and raise :class:`TrainingInterrupted`. A stall (the
        watchdog's :class:`TrainingStalled`, raised inside ``train()``) checkpoints the state of the last finished
        iteration, which the stalled one has not changed, and re-raises naming it."""
        every = self.config.checkpoint_every if self.run_dir is not None else 0
        next_checkpoint = (self._steps // every + 1) * every if every else None
        start = time.perf_counter()
        while self._steps < total_steps:
            if stop is not None and stop():
                stop_at(stop, self._steps, self.run_dir and self.run_dir / "checkpoints", self._checkpoint)
            try:
                result = self.algorithm.train()
            except BaseException as error:
                stopped = raised_by_signal(error)
                if stopped is None:
                    raise
                if isinstance(stopped, TrainingStalled):  # the stalled iteration changed nothing: save the last one
                    self._stalled = True
                    raise stopped.with_checkpoint(self.run_dir and checkpoint_at(
                        self.run_dir / "checkpoints", self._steps, self._checkpoint)) from None
                raise stopped from None  # a second Ctrl-C: at once, as promised
            runners = result.get("env_runners", {})
            self._steps = int(runners.get("num_env_steps_sampled_lifetime", self._steps))
            returns = [float(runners["episode_return_mean"])] if runners.get("num_episodes", 0) else []
            for observer in observers:
                observer(self._steps, returns)
            if watchdog is not None:
                watchdog.beat(self._steps)
            if self.run_dir is not None:
                self._log(result, time.perf_counter() - start)
            if next_checkpoint is not None and self._steps >= next_checkpoint:
                self._checkpoint()
                next_checkpoint = (self._steps // every + 1) * every
                if watchdog is not None:  # writing it made no env steps, by design
                    watchdog.resume()

    def _checkpoint(self) -> None:
        with atomic_checkpoint(self.run_dir / "checkpoints", self._steps, self.config.keep_checkpoints) as partial:
            self.algorithm.save_to_path(str((partial / "algorithm").resolve()))
            # RLlib's checkpoint leaves it out. Env runners that do not answer (a stall) leave it out too: the
            # resumed run then restarts their random streams (and says so).
            state = sampling_state(self.algorithm, timeout_s=STATE_TIMEOUT_S)
            if state is not None:
                torch.save(state, partial / SAMPLING_STATE)

    def waiting_for(self) -> str:
        """For the stall watchdog: the env runners' health, the nodes Ray lost, the resources held."""
        group = self.algorithm.env_runner_group
        remote = group.num_remote_env_runners()
        parts = [f"samples from {remote} env runner{'s' * (remote != 1)} ({group.num_healthy_remote_env_runners()} "
                 f"healthy, the rest restarting)" if remote else "samples from the driver's own env runner"]
        dead = [node["NodeManagerAddress"] for node in ray.nodes() if not node["Alive"]]
        if dead:
            parts.append(f"nodes lost: {', '.join(dead)}")
        total, free = ray.cluster_resources(), ray.available_resources()
        parts.append(f"CPUs free {free.get('CPU', 0):g} of {total.get('CPU', 0):g}, GPUs free {free.get('GPU', 0):g} "
                     f"of {total.get('GPU', 0):g}")
        return "; ".join(parts)

    def _log(self, result: dict[str, Any], seconds: float) -> None:
        """One line of ``RUN/metrics.jsonl`` per iteration (steps, time, episode return, losses, KL, learning
        rate) and the same values in TensorBoard under SB3's tag names (``rollout/ep_rew_mean``,
        ``train/value_loss``, ``kl/*``), so runs of both backends overlay in one ``tensorboard --logdir``."""
        runners = result.get("env_runners", {})
        learner = result.get("learners", {}).get(DEFAULT_MODULE_ID, {})
        line = {"num_env_steps": self._steps, "seconds": round(seconds, 3),
                "episode_return_mean": runners.get("episode_return_mean"),
                **{key: learner[key] for key in LOGGED_LEARNER_KEYS if key in learner},
                "learning_rate": learner.get(LEARNING_RATE_KEY)}
        line = {k: (float(v) if v is not None else None) for k, v in line.items()}
        with open(self.run_dir / "metrics.jsonl", "a") as out:
            out.write(json.dumps(line) + "\n")
        if self.writer is not None:
            for key, tag in SB3_TAGS.items():
                if line.get(key) is not None:
                    self.writer.add_scalar(tag, line[key], self._steps)
            self.writer.add_scalar("time/seconds", seconds, self._steps)

    def save(self, run_dir: Path) -> None:
        self.algorithm.save_to_path(str((run_dir / "algorithm").resolve()))

    def close(self) -> None:
        if self._stalled:  # RLlib's stop() asks every env runner to stop and waits: a hung one never answers
            self.algorithm.env_runner_group.reset([])  # kills the remote env runners (ray.kill) instead
        self.algorithm.stop()
        # Outside Tune, Ray's Trainable still makes ~/ray_results/<date><random>/ for each Algorithm, and leaves it
        # empty: remove it (only if empty: never anything a user wrote there).
        logdir = Path(self.algorithm.logdir)
        if logdir.is_dir() and not any(logdir.iterdir()):
            logdir.rmdir()
        if self.writer is not None:
            self.writer.close()
        if self.started_ray:
            ray.shutdown()


def _tensorboard_writer(run_dir: Path | None):
    """A SummaryWriter into ``RUN/tensorboard/train_1`` (SB3's layout), or None without a run or tensorboard."""
    if run_dir is None:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # the tensorboard package is an extra
        return None
    return SummaryWriter(str(run_dir / "tensorboard" / "train_1"))  # a resumed run adds an events file there


def rllib_resources(config: TrainConfig, cluster_gpus: float) -> dict[str, Any]:
    """Env runners, envs per runner (``n_envs`` spread over the runners by default), learners and their GPUs.

    Without ``num_gpus_per_learner``, ``device`` decides: ``"cuda"`` puts each learner on a GPU, ``"auto"`` does
    when the cluster has one for every learner, ``"cpu"`` never does.
    """
    runners = DEFAULT_ENV_RUNNERS if config.num_env_runners is None else config.num_env_runners
    per_runner = config.num_envs_per_env_runner or max(1, config.n_envs // max(1, runners))
    learners = config.num_learners or 0
    gpus = config.num_gpus_per_learner
    if gpus is None:
        gpus = 1 if config.device == "cuda" or (config.device == "auto" and cluster_gpus >= max(1, learners)) else 0
    return dict(num_env_runners=runners, num_envs_per_env_runner=per_runner, num_learners=learners,
                num_gpus_per_learner=gpus)


def start_ray(address: str | None) -> bool:
    """Join ``address`` or start a local Ray sized to this machine; False when Ray was already running here."""
    if ray.is_initialized():
        return False
    # Ray's C++ core logs warnings (e.g. about actor max_restarts) straight to this process's stderr, through any
    # progress bar; errors still show.
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "error")
    if address is not None:
        check_reachable(address)
        try:
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
        except ConnectionError as error:
            raise ConnectionError(f"ray_address={address!r}: {error}. {AUTH_ADVICE}") from None
    else:
        # address="local": a new instance always. Without it ray.init() joins the cluster whose address `ray start`
        # (or ray.cluster_utils) last wrote to <temp dir>/ray_current_cluster, even a stopped one, and then refuses
        # num_cpus ("When connecting to an existing cluster, num_cpus and num_gpus must not be provided").
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, logging_level=logging.ERROR,
                 log_to_driver=False)
    return True


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Refuse a ``HOST:PORT`` or ``ray://HOST:PORT`` address where nothing listens, within ``timeout_s``: Ray itself
    retries such an address for minutes and ignores SIGTERM while it does. ``auto`` (a cluster started on this
    machine) Ray resolves and refuses quickly on its own."""
    if address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"ray_address={address!r}: give auto (a cluster started on this machine), HOST:PORT (the "
                         "head's GCS port, 6379 by default) or ray://HOST:10001 (Ray Client).")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as error:
        raise ConnectionError(f"ray_address={address!r}: nothing answers at {host}:{port} within {timeout_s:.0f} s "
                              f"({error.strerror or error}). Start the head there (ray start --head), or check the "
                              "address, the port and the firewall.") from None


def load_module(checkpoint: Path) -> RLModule:
    """The trained LMRLModule from an RLlib run's ``algorithm/`` or ``checkpoints/step-N/algorithm/``, without
    starting Ray."""
    path = Path(checkpoint) / MODULE_IN_CHECKPOINT
    if not path.is_dir():
        raise CheckpointError(f"{checkpoint} holds no RLlib module ({MODULE_IN_CHECKPOINT} is missing).")
    return RLModule.from_checkpoint(str(path.resolve()))
