"""The process-wide random streams a training run draws from (Python's, numpy's legacy global, torch's CPU and
CUDA ones), captured and restored for exact resume by both backends' checkpoints."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def random_streams() -> dict[str, Any]:
    """This process's global random streams."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_random_streams(streams: dict[str, Any]) -> None:
    random.setstate(streams["python"])
    np.random.set_state(streams["numpy"])
    torch.set_rng_state(streams["torch"])
    if streams["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(streams["cuda"])
