"""The SB3 side of a run: the stock algorithm on lm_gym.make_vec_env, KL shaping, checkpoints, exact resume."""

from __future__ import annotations

import sys
import threading
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.utils import LinearSchedule

from agents.runs.checkpoints import ResumableCheckpointCallback, load_checkpoint, save_checkpoint
from agents.runs.interrupts import StopRequest, stop_at
from agents.runs.progress import Observer
from agents.runs.watchdog import StallWatchdog
from agents.sb3.algorithms import ALGORITHMS, make_algorithm
from agents.sb3.group_advantages import GroupAdvantageCallback
from agents.sb3.kl import KLPenaltyCallback
from agents.sb3.policy import LMActorCriticPolicy
from agents.sb3.rollout_log_probs import RecomputeLogProbsCallback
from agents.sb3.sample_logging import SampleLogCallback
from lm_gym.env import TextGenEnv
from lm_gym.multiturn import MultiTurnEnv
from lm_gym.prompts import Prompt
from lm_gym.vector import make_vec_env

if TYPE_CHECKING:
    from agents.runs.config import TrainConfig

class SB3Trainer:
    """Builds (or, from a checkpoint, restores) ``config.algo`` on ``config.n_envs`` TextGen envs and trains it.

    ``run_dir=None`` trains without TensorBoard logs or checkpoints (``lm-gym compare``).
    """

    final_files = ("model.zip",)

    def __init__(self, config: TrainConfig, eval_env: TextGenEnv | MultiTurnEnv, train_prompts: list[Prompt] | None,
                 run_dir: Path | None, resume_from: Path | None = None):
        self.config, self.run_dir = config, run_dir
        spec = ALGORITHMS[config.algo]
        if config.task.multi_turn:  # the training split's text envs deal their own instances
            env_kwargs = config.env_kwargs("train")
        else:  # the eval env's reward object is shared: a classifier reward then sits in memory once
            env_kwargs = {**config.env_kwargs(), "reward": eval_env.reward, "reward_kwargs": None,
                          "prompts": train_prompts, "max_prompt_tokens": eval_env.max_prompt_tokens}
        self.vec_env = make_vec_env(n_envs=config.n_envs, seed=config.seed,
                                    group_size=config.group_size or spec.group_size, **env_kwargs)
        self.kl = KLPenaltyCallback(coef=config.kl_coef, target=config.kl_target) if spec.on_policy else None
        self.advantage = GroupAdvantageCallback(spec.advantage) if spec.advantage else None
        if resume_from is not None:
            self.algorithm = load_checkpoint(resume_from, spec.cls, self.vec_env, device=config.device, kl=self.kl)
        else:
            tensorboard = _tensorboard_dir(run_dir) if run_dir is not None else None
            kwargs = config.algorithm_kwargs()
            if config.lr_schedule == "linear":  # SB3 calls it with the progress remaining, 1 -> 0 over the run
                kwargs["learning_rate"] = LinearSchedule(kwargs["learning_rate"], 0.0, 1.0)  # resolved by config
            self.algorithm = make_algorithm(config.algo, self.vec_env, model=config.lm, seed=config.seed,
                                            device=config.device, tensorboard_log=tensorboard, **kwargs)
        if self.algorithm.tensorboard_log is None:
            # SB3's default logger would make an empty tempdir/SB3-<time> folder at every learn().
            self.algorithm.set_logger(Logger(folder=None, output_formats=[]))
        self.policy = self.algorithm.policy
        self.reference = self.policy.load_reference_model()
        if self.kl is not None:
            self.kl.reference = self.reference
        self.resumed = resume_from is not None
        self.device = str(self.policy.device)
        self.notes = [] if spec.on_policy else [
            f"KL shaping applies to on-policy algorithms; {config.algo} trains on the task reward alone (its KL "
            "to the initial LM is still reported)."]

    @property
    def num_timesteps(self) -> int:
        return self.algorithm.num_timesteps

    def learn(self, total_steps: int, observers: Sequence[Observer] = (), callbacks: Sequence[BaseCallback] = (),
              stop: StopRequest | None = None, watchdog: StallWatchdog | None = None) -> None:
        """Train until ``total_steps`` env steps; ``callbacks`` are extra SB3 callbacks. Once ``stop()`` is true,
        write a checkpoint at the next rollout boundary and raise
        :class:`agents.runs.interrupts.TrainingInterrupted`."""
        own: list[BaseCallback] = [ObserverCallback(observers)]
        if self.config.recomputes_log_probs and isinstance(self.policy, LMActorCriticPolicy):
            own.append(RecomputeLogProbsCallback())  # before KL shaping, which reads the log-probs
        if self.run_dir is not None:
            own.append(SampleLogCallback(self.config.log_samples))
        if self.kl is not None and (self.config.kl_coef > 0 or self.config.kl_target is not None):
            own.append(self.kl)
        if self.advantage is not None:  # after KL shaping, whose GAE it replaces
            own.append(self.advantage)
        if self.run_dir is not None and self.config.checkpoint_every:
            own.append(ResumableCheckpointCallback(self.run_dir / "checkpoints", self.config.checkpoint_every, self.kl,
                                                   self.config.keep_checkpoints))
        if stop is not None:  # after the periodic checkpoint, which it reuses when both fall on one step
            own.append(StopCallback(stop, self.run_dir and self.run_dir / "checkpoints", self.kl))
        if watchdog is not None:  # last: its clock restarts after the checkpoint written at a rollout's start
            own.append(WatchdogCallback(watchdog))
        self.algorithm.learn(total_timesteps=total_steps - self.num_timesteps, callback=[*own, *callbacks],
                             reset_num_timesteps=not self.resumed, tb_log_name="train")

    def save(self, run_dir: Path) -> None:
        self.algorithm.save(run_dir / "model.zip")

    def waiting_for(self) -> str:
        """For the stall watchdog: the env step that has not returned, and where the main thread is in it."""
        frame = sys._current_frames().get(threading.main_thread().ident)
        where = traceback.extract_stack(frame)[-1] if frame is not None else None
        at = f", in {where.name} ({where.filename}:{where.lineno})" if where is not None else ""
        return (f"an env step that never returned (the envs' step(): a reward, a text env, a tool){at}; "
                "each of the n_envs envs steps in this process")

    def close(self) -> None:
        self.vec_env.close()


class ObserverCallback(BaseCallback):
    """Calls each observer after every env step with the step count and the returns of episodes just finished."""

    def __init__(self, observers: Sequence[Observer]):
        super().__init__()
        self.observers = observers

    def _on_step(self) -> bool:
        # VecMonitor puts {"r", "l", "t"} into the info of each env whose episode just ended.
        returns = [float(info["episode"]["r"]) for info in self.locals["infos"] if "episode" in info]
        for observer in self.observers:
            observer(self.num_timesteps, returns)
        return True


class WatchdogCallback(BaseCallback):
    """Feeds the stall watchdog every env step; pauses it during the update, which makes none by design."""

    def __init__(self, watchdog: StallWatchdog):
        super().__init__()
        self.watchdog = watchdog

    def _on_rollout_start(self) -> None:
        self.watchdog.resume()

    def _on_step(self) -> bool:
        self.watchdog.beat(self.num_timesteps)
        return True

    def _on_rollout_end(self) -> None:
        self.watchdog.pause()


class StopCallback(BaseCallback):
    """Honours a stop request at the next rollout boundary, where a checkpoint resumes exactly: writes one there
    (into ``directory``; None: none) and raises :class:`TrainingInterrupted`."""

    def __init__(self, stop: StopRequest, directory: Path | None, kl: KLPenaltyCallback | None):
        super().__init__()
        self.stop, self.directory, self.kl = stop, directory, kl

    def _on_rollout_start(self) -> None:
        if self.stop():
            stop_at(self.stop, self.num_timesteps, self.directory,
                    lambda: save_checkpoint(self.model, self.directory, self.kl))

    def _on_step(self) -> bool:
        return True


def _tensorboard_dir(run_dir: Path) -> str | None:
    try:
        import tensorboard  # noqa: F401  (SB3 writes TensorBoard events only when it is installed)
    except ImportError:
        return None
    return str(run_dir / "tensorboard")
