"""What an RLlib checkpoint leaves out and exact resume needs: where each env runner's sampling stands.

RLlib's ``Algorithm.save_to_path`` stores the module, the optimizer and the connectors, but not the env runners'
random streams, their envs or the episodes they were in the middle of: a restored Algorithm rebuilds its runners,
which seed themselves afresh, so the first iteration after ``--resume`` replays iteration 1's samples. This file
captures, per env runner, everything its next ``sample()`` reads, and puts it back after a restore:

- the process's random streams (Python, numpy's legacy global, torch): the LM samples tokens with torch's;
- every sub-env's state (``TextGenEnv.get_state`` / ``MultiTurnEnv.get_state``: the episode so far and its RNG)
  and the vector env's pending autoresets;
- the runner's ongoing episodes (RLlib cuts episodes at a rollout's end and continues them in the next), the
  module input it already computed for the next step, and whether it still has to reset.

It reads private attributes of RLlib's ``SingleAgentEnvRunner`` (Ray 2.60); :func:`runner_sampling_state` refuses
an env runner that lacks them rather than resuming inexactly without a word.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ray.rllib.algorithms import Algorithm

from agents.random_streams import random_streams, set_random_streams
from agents.rllib.transport import forget_tokens

# The SingleAgentEnvRunner attributes its next sample() reads (besides the envs and the random streams).
RUNNER_ATTRIBUTES = ("_ongoing_episodes", "_ongoing_episodes_for_metrics", "_cached_to_module", "_needs_initial_reset",
                     "_shared_data")


def runner_sampling_state(runner) -> dict[str, Any]:
    """Everything an env runner's next ``sample()`` depends on (run inside the runner's process)."""
    missing = [name for name in RUNNER_ATTRIBUTES if not hasattr(runner, name)]
    if missing:
        raise RuntimeError(f"{type(runner).__name__} has no {missing}: this Ray version's env runner keeps its "
                           "sampling state elsewhere, so lm-gym cannot resume its sampling exactly.")
    vector = None if runner.env is None else runner.env.unwrapped
    return {
        "worker_index": runner.worker_index,
        "random": random_streams(),
        "envs": None if vector is None else [env.unwrapped.get_state() for env in vector.envs],
        "autoreset": None if vector is None else np.array(vector._autoreset_envs),
        "runner": {name: getattr(runner, name) for name in RUNNER_ATTRIBUTES},
    }


def set_runner_sampling_state(runner, states: dict[int, dict[str, Any]]) -> None:
    """Put back what :func:`runner_sampling_state` captured for this runner (``states`` by worker index)."""
    state = states[runner.worker_index]
    if state["envs"] is not None:
        vector = runner.env.unwrapped
        for env, env_state in zip(vector.envs, state["envs"], strict=True):
            env.reset()  # through Gymnasium's wrappers, which refuse a step before a reset; then the saved state
            env.unwrapped.set_state(env_state)
            forget_tokens(env)
        vector._autoreset_envs = np.array(state["autoreset"])
    for name, value in state["runner"].items():
        setattr(runner, name, value)
    set_random_streams(state["random"])  # last: nothing above may draw from them


def sampling_state(algorithm: Algorithm, timeout_s: float | None = None) -> dict[str, Any] | None:
    """The sampling state of every env runner of ``algorithm`` (local and remote) and the driver's random
    streams (its learner draws from them), for :func:`set_sampling_state` after ``Algorithm.from_checkpoint``.
    None when a remote env runner did not answer within ``timeout_s``: a part would not resume exactly either."""
    group = algorithm.env_runner_group
    runners = group.foreach_env_runner(runner_sampling_state, local_env_runner=True, timeout_seconds=timeout_s)
    states = {state["worker_index"]: state for state in runners}
    if len([index for index in states if index > 0]) < group.num_remote_env_runners():
        return None
    return {"driver": random_streams(), "env_runners": states}


def set_sampling_state(algorithm: Algorithm, state: dict[str, Any]) -> None:
    """Continue every env runner where :func:`sampling_state` left it. The restored Algorithm must have the same
    env runners (worker indices) as the saved one."""
    saved = state["env_runners"]
    live = algorithm.env_runner_group.foreach_env_runner(lambda runner: runner.worker_index, local_env_runner=True)
    if sorted(live) != sorted(saved):
        raise ValueError(f"the checkpoint's sampling state is for env runners {sorted(saved)}, the restored run has "
                         f"{sorted(live)}; resume with the num_env_runners the run was started with.")
    algorithm.env_runner_group.foreach_env_runner(lambda runner: set_runner_sampling_state(runner, saved),
                                                  local_env_runner=True)
    set_random_streams(state["driver"])
