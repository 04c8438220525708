"""What SB3's own rollout buffers will cost on TextGen-v0, said before the first step.

SB3's ``DictRolloutBuffer`` keeps a whole window per step (int64 ids and mask: ``16 x window`` bytes per token) and
its ``get()`` copies all of it once more; ``np.zeros`` only reserves address space, so a rollout that does not fit
is found by the OOM killer halfway through collecting it. :func:`check_rollout_store` projects the bytes when the
policy is built and warns (over :data:`WARN_FRACTION` of the machine's memory) or refuses (over all of it), naming
the fix: :class:`agents.EpisodeRolloutBuffer`, which keeps tokens.
"""

from __future__ import annotations

import inspect
import os
import warnings

from stable_baselines3.common.buffers import BaseBuffer

from agents.sb3.buffers import EpisodeTokenStore

WARN_FRACTION = 0.25


def machine_memory() -> int:
    """Physical memory in bytes (0 where the platform does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 0


def projected_bytes(buffer: BaseBuffer) -> int:
    """What a full rollout in ``buffer`` holds at its peak: its observation (and mask) arrays twice, as ``get()``
    flattens them into copies."""
    arrays = list(getattr(buffer, "observations", {}).values())
    masks = buffer.__dict__.get("action_masks")
    if masks is not None:
        arrays.append(masks)
    return 2 * sum(array.nbytes for array in arrays)


def rollout_buffer_being_built() -> BaseBuffer | None:
    """The rollout buffer of the SB3 algorithm now building a policy, if any. SB3 creates the buffer, then the
    policy, inside ``OnPolicyAlgorithm._setup_model`` and hands the policy nothing that says how large rollouts
    are, so the algorithm is read from that call's frame."""
    frame = inspect.currentframe()
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if isinstance(getattr(candidate, "rollout_buffer", None), BaseBuffer):
            return candidate.rollout_buffer
        frame = frame.f_back
    return None


def check_rollout_store(buffer: BaseBuffer | None, memory: int | None = None) -> None:
    """Warn when a window-keeping rollout buffer will take more than a quarter of the machine's memory; refuse one
    that cannot fit at all."""
    if buffer is None or isinstance(buffer, EpisodeTokenStore):
        return
    memory = machine_memory() if memory is None else memory
    needed = projected_bytes(buffer)
    if not memory or needed <= WARN_FRACTION * memory:
        return
    what = (f"{type(buffer).__name__} keeps a whole observation window per step: this rollout of "
            f"{buffer.buffer_size} steps x {buffer.n_envs} envs needs {needed / 2**30:.1f} GiB (its get() copies it "
            f"once more), on a machine of {memory / 2**30:.1f} GiB.")
    fix = ("Pass rollout_buffer_class=EpisodeRolloutBuffer (MaskableEpisodeRolloutBuffer for MaskablePPO; from "
           "agents): it keeps each token once, ~44 bytes per step.")
    if needed > memory:
        raise MemoryError(f"{what} {fix}")
    warnings.warn(f"{what} {fix}", stacklevel=4)
