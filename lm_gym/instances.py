"""Which task instances a text env's seeds deal, to check that held-out seeds hold out anything.

Training episodes of a text env draw seeds below :data:`lm_gym.multiturn.HELD_OUT_SEEDS` and held-out ones use seeds
from there on; a game with few distinct instances (GEM's ``GuessTheNumber-v0-easy`` has 10 secrets) deals the same
instances under both, so its held-out score measures training instances. An instance is known by what the text env
holds after ``reset(seed)``: its plain state (numbers, short strings and containers of them, a few attributes deep;
random generators, other objects and prose, the messages a text env keeps, are left out), less what differs between
two resets to the same seed (histories that grow across episodes, counters, clocks). Where that state is the same
for every seed (a text env that keeps its instance elsewhere), by its first message instead. The first message
alone would overcount: GEM words the same game differently from seed to seed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from lm_gym.multiturn import HELD_OUT_SEEDS, MultiTurnEnv

PLAIN = (bool, int, float, str, type(None))
LONGEST_NAME = 64  # longer strings are prose (messages, which GEM and TextArena word differently per seed), left out
LARGEST_CONTAINER = 1000  # larger lists and dicts are resources (a word list), not an instance's state: left out
DEPTH = 6  # levels looked into (an adapter's env, a wrapper's env, its state object, its game-state dict, ...)


def plain_state(value: Any, depth: int = DEPTH, within: frozenset[int] = frozenset()) -> Any:
    """``value`` reduced to plain, comparable data (see the module docstring); ``None`` stands for what is left out.
    ``within``: the ids of the objects above this one (an object that refers back to one of them is left out)."""
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, str) and len(value) > LONGEST_NAME:
        return None
    if isinstance(value, PLAIN):
        return value
    containers = (dict, list, tuple, set, frozenset)
    if depth == 0 or id(value) in within or (isinstance(value, containers) and len(value) > LARGEST_CONTAINER):
        return None
    within = within | {id(value)}
    if isinstance(value, dict):
        return tuple(sorted((str(k), plain_state(v, depth - 1, within)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(plain_state(v, depth - 1, within) for v in value)
    if isinstance(value, (set, frozenset)):
        return tuple(sorted(repr(plain_state(v, depth - 1, within)) for v in value))
    if isinstance(value, np.ndarray) and value.size <= 4096:
        return tuple(value.ravel().tolist())
    if hasattr(value, "__dict__") and not isinstance(value, type) and not callable(value):
        return plain_state({k: v for k, v in vars(value).items() if not k.startswith("_")}, depth, within)
    return None


def flat_state(value: Any, path: str = "") -> dict[str, Any]:
    """A :func:`plain_state` as ``{path: leaf}``."""
    if not isinstance(value, tuple):
        return {path: value}
    flat: dict[str, Any] = {}
    for index, item in enumerate(value):
        named = isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)
        flat.update(flat_state(item[1], f"{path}/{item[0]}") if named else flat_state(item, f"{path}/{index}"))
    return flat


def instance_keys(env: MultiTurnEnv, seeds: list[int]) -> list[str]:
    """The identity of the instance that ``env``'s text env deals for each of ``seeds`` (module docstring)."""
    def deal(seed: int) -> tuple[str, dict[str, Any]]:
        first_message, _ = env.reset_text_env(seed)
        return first_message, flat_state(plain_state(env.text_env))

    _, again = deal(seeds[0])
    dealt = [deal(seed) for seed in seeds]
    stable = sorted(path for path, leaf in dealt[0][1].items() if path in again and again[path] == leaf)
    states = [repr([state.get(path) for path in stable]) for _, state in dealt]
    return states if len(set(states)) > 1 else [message for message, _ in dealt]


@dataclass
class HeldOutOverlap:
    """How many held-out instances also occur among the instances of ``probed`` training seeds."""

    held_out: int  # held-out instances
    seen_in_training: int  # of them, how many a probed training seed also deals
    probed: int  # training seeds probed
    distinct_training_instances: int  # distinct instances among them

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def message(self, env_id: str) -> str:
        return (f"{self.seen_in_training} of the {self.held_out} held-out instances of {env_id} also occur in training "
                f"({self.distinct_training_instances} distinct instances among {self.probed} training seeds): the game "
                "has few instances, so the held-out score measures training instances too.")


def held_out_overlap(env: MultiTurnEnv, held_out_seeds: list[int], probes: int = 128, seed: int = 0
                     ) -> HeldOutOverlap:
    """Deal ``probes`` training seeds (drawn as training episodes draw them) and each held-out seed once, and count
    the held-out instances that training also deals. ``env`` is used for it (its episode in progress is lost)."""
    training_seeds = np.random.default_rng(seed).integers(HELD_OUT_SEEDS, size=probes).tolist()
    keys = instance_keys(env, training_seeds + list(held_out_seeds))
    training = set(keys[:probes])
    return HeldOutOverlap(len(held_out_seeds), sum(key in training for key in keys[probes:]), probes, len(training))
