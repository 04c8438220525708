"""Periodic, atomic training checkpoints in a run directory, and exact resume for the SB3 backend.

Layout: ``RUN/checkpoints/step-000004096/``. Each checkpoint is written into a hidden ``.partial`` directory
and renamed into place (:func:`atomic_checkpoint`), so a crash never leaves a half-written checkpoint under a
real name, and an existing checkpoint is never overwritten. What is inside depends on the backend:

- SB3 (this module): ``model.zip`` (weights, optimizer, step counter, last observation), ``state.pt`` (each
  env's in-progress episode and RNG, ``VecMonitor``'s returns and lengths of those episodes so far, the
  torch/numpy/python RNG states, the KL controller, the NLPO copy)
  and, for DQN/QR-DQN, ``replay_buffer.pkl``. Resuming reproduces the uninterrupted run exactly.
- RLlib (:mod:`agents.runs.rllib_backend`): the Algorithm's own checkpoint (``Algorithm.save_to_path``) and
  ``sampling_state.pt`` (each env runner's random streams, envs and cut episodes: :mod:`agents.rllib.sampling_state`,
  which RLlib's checkpoint leaves out). Resuming reproduces the uninterrupted run (synchronous PPO; APPO and
  IMPALA sample asynchronously, so no two of their runs are alike).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import warnings
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnvWrapper, VecMonitor

from agents.random_streams import random_streams, set_random_streams
from agents.runs.errors import CheckpointError
from agents.sb3.kl import KLPenaltyCallback


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """A run's checkpoints, oldest first."""
    return checkpoints_in(Path(run_dir) / "checkpoints")


def checkpoints_in(directory: Path) -> list[Path]:
    """The checkpoints in ``directory``, oldest first (their names sort by step)."""
    return sorted(p for p in Path(directory).glob("step-*") if p.is_dir())


def checkpoint_name(step: int) -> str:
    return f"step-{step:09d}"


@contextlib.contextmanager
def atomic_checkpoint(directory: Path, step: int, keep: int = 0) -> Iterator[Path]:
    """Yields an empty ``.partial`` directory to write checkpoint ``step`` into; renames it into place after, then
    deletes all but the newest ``keep`` checkpoints (0: keeps all)."""
    final = Path(directory) / checkpoint_name(step)
    if final.exists():
        raise FileExistsError(f"checkpoint {final} exists already; checkpoints are never overwritten.")
    partial = final.with_name(f".{final.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)  # left by a crash during an earlier save
    partial.mkdir(parents=True)
    yield partial
    os.replace(partial, final)  # atomic: the checkpoint appears whole or not at all
    prune_checkpoints(directory, keep)


def prune_checkpoints(directory: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints in ``directory`` (0: none). Called once a new one is whole, so a
    resumable checkpoint always remains; the deletion of an older one is not atomic, and a crash mid-way leaves it
    partly deleted: resume takes the newest, which is whole."""
    if keep > 0:
        for old in checkpoints_in(directory)[:-keep]:
            shutil.rmtree(old)


def checkpoint_at(directory: Path, step: int, save: Callable[[], object]) -> Path:
    """The checkpoint of ``step`` in ``directory``: the periodic one when it is there, else the one ``save()``
    writes now (a stop or a stall between periodic checkpoints)."""
    checkpoint = Path(directory) / checkpoint_name(step)
    if not checkpoint.exists():
        save()
    return checkpoint


def save_checkpoint(model: BaseAlgorithm, directory: Path, kl: KLPenaltyCallback | None = None, keep: int = 0
                    ) -> Path:
    """Checkpoint ``model`` (and the KL controller) in ``directory``, keeping the newest ``keep`` (0: all)."""
    with atomic_checkpoint(directory, model.num_timesteps, keep) as partial:
        _write_sb3_checkpoint(model, partial, kl)
    return Path(directory) / checkpoint_name(model.num_timesteps)


def _write_sb3_checkpoint(model: BaseAlgorithm, partial: Path, kl: KLPenaltyCallback | None) -> None:
    model.save(partial / "model.zip")
    if getattr(model, "replay_buffer", None) is not None:
        model.save_replay_buffer(partial / "replay_buffer.pkl")
    nlpo = getattr(model.policy, "nlpo", None)
    state = {
        "num_timesteps": model.num_timesteps,
        "envs": model.env.env_method("get_state"),
        "rng": random_streams(),
        "kl": None if kl is None else kl.state_dict(),
        "nlpo": None if nlpo is None else {"updates": nlpo.updates, "weights": nlpo.lm.state_dict()},
        "monitor": monitor_state(model.env),
    }
    torch.save(state, partial / "state.pt")


def vec_monitor(env) -> VecMonitor | None:
    """The ``VecMonitor`` in ``env``'s wrapper chain, if any."""
    while isinstance(env, VecEnvWrapper):
        if isinstance(env, VecMonitor):
            return env
        env = env.venv
    return None


def monitor_state(env) -> dict | None:
    """The returns and lengths so far of the episodes in progress, as ``VecMonitor`` adds them up, and its episode
    count: without them the first episodes logged after a resume would report only their part after it."""
    monitor = vec_monitor(env)
    if monitor is None:
        return None
    return {"returns": monitor.episode_returns.copy(), "lengths": monitor.episode_lengths.copy(),
            "count": monitor.episode_count}


def set_monitor_state(env, state: dict | None) -> None:
    monitor = vec_monitor(env)
    if monitor is not None and state is not None:  # absent in checkpoints of lm-gym <= 0.4
        monitor.episode_returns[:] = state["returns"]
        monitor.episode_lengths[:] = state["lengths"]
        monitor.episode_count = state["count"]


def load_checkpoint(path: Path, cls: type[BaseAlgorithm], env, device: str = "auto",
                    kl: KLPenaltyCallback | None = None) -> BaseAlgorithm:
    """Rebuild the algorithm on ``env`` and restore every piece of state saved by :func:`save_checkpoint`."""
    try:
        state = torch.load(path / "state.pt", weights_only=False)
        model = cls.load(path / "model.zip", env=env, device=device, force_reset=False)
        if (path / "replay_buffer.pkl").exists():
            model.load_replay_buffer(path / "replay_buffer.pkl")
    except (OSError, EOFError, zipfile.BadZipFile, RuntimeError, ValueError, KeyError, AssertionError) as error:
        raise CheckpointError(
            f"cannot resume from {path}: {type(error).__name__}: {error}. The checkpoint is corrupted or was made "
            "with another configuration (env, model or algorithm); delete it to resume from the one before, or "
            "start a new run."
        ) from error
    if len(state["envs"]) != env.num_envs:
        raise CheckpointError(f"{path} holds {len(state['envs'])} envs but the run has n_envs={env.num_envs}.")
    for index, env_state in enumerate(state["envs"]):
        env.env_method("set_state", env_state, indices=[index])
    set_monitor_state(env, state.get("monitor"))
    if kl is not None and state["kl"] is not None:
        kl.load_state_dict(state["kl"])
    nlpo = getattr(model.policy, "nlpo", None)
    if nlpo is not None and state["nlpo"] is not None:
        nlpo.lm.load_state_dict(state["nlpo"]["weights"])
        nlpo.updates = state["nlpo"]["updates"]
    # Last: loading re-seeds the RNGs from the algorithm's seed.
    set_random_streams(state["rng"])
    return model


class ResumableCheckpointCallback(BaseCallback):
    """Saves a checkpoint at the first rollout boundary after every ``every`` env steps, with everything that
    exact resume needs (:func:`save_checkpoint`; SB3's own ``CheckpointCallback`` saves ``model.zip`` only), and keeps
    the newest ``keep`` (0: all).

    Not named ``CheckpointCallback``, so that it is not taken for SB3's (``save_freq=``, ``save_path=``).
    """

    def __init__(self, directory: Path, every: int, kl: KLPenaltyCallback | None = None, keep: int = 0):
        super().__init__()
        if every <= 0:
            raise ValueError(f"checkpoint_every={every}: must be positive (0 turns checkpoints off in train()).")
        self.directory, self.every, self.kl, self.keep = Path(directory), every, kl, keep
        self.saved: list[Path] = []

    def _on_training_start(self) -> None:
        self.next_step = (self.num_timesteps // self.every + 1) * self.every

    def _on_rollout_start(self) -> None:
        if self.num_timesteps >= self.next_step:
            self.saved.append(save_checkpoint(self.model, self.directory, self.kl, self.keep))
            self.next_step = (self.num_timesteps // self.every + 1) * self.every

    def _on_step(self) -> bool:
        return True



def __getattr__(name: str):
    if name == "CheckpointCallback":  # lm-gym <= 0.3's name, which SB3's own callback also has
        warnings.warn("agents.CheckpointCallback is now ResumableCheckpointCallback (SB3 has a CheckpointCallback "
                      "of its own, with other arguments)", DeprecationWarning, stacklevel=2)
        return ResumableCheckpointCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
