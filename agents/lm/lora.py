"""LoRA through peft: train adapters only, and use the same model with adapters off as the KL reference."""

from __future__ import annotations

import copy
import warnings
from typing import Any

from torch import nn
from transformers import PreTrainedModel
from transformers.pytorch_utils import Conv1D


def add_lora(lm: PreTrainedModel, lora: dict[str, Any]) -> nn.Module:
    """Wrap ``lm`` with LoRA adapters (``lora`` holds ``peft.LoraConfig`` arguments); only they train.

    ``lora_dropout`` is set to 0 (with a warning if it was not): SB3 and RLlib switch the policy between train
    and eval mode, so a live dropout would make the update's log-probs differ from the rollout's (measured:
    first-minibatch max |ratio - 1| of 0.11 at learning rate 0 with ``lora_dropout=0.1``), the same reason
    :func:`lm_gym.models.load_causal_lm` zeroes the base model's dropout.
    """
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as error:
        raise ImportError("lora=... needs the peft package: pip install 'lm-gym[lora]'") from error
    lora = dict(lora)
    if lora.get("lora_dropout"):
        warnings.warn(f"lora_dropout={lora['lora_dropout']} set to 0: dropout in the adapters would make the PPO "
                      "ratio differ from 1 before any update (the policy switches between train and eval mode).",
                      UserWarning, stacklevel=2)
    lora["lora_dropout"] = 0.0
    targets = lora.get("target_modules")
    if "fan_in_fan_out" not in lora and isinstance(targets, (list, tuple)):
        # GPT-2's projections are Conv1D (weights stored transposed); peft needs fan_in_fan_out for them.
        lora["fan_in_fan_out"] = any(isinstance(module, Conv1D) for name, module in lm.named_modules()
                                     if name.rsplit(".", 1)[-1] in targets)
    with warnings.catch_warnings():  # peft reads a property that transformers 5 deprecated; nothing to do here
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(lm, LoraConfig(task_type="CAUSAL_LM", **lora))


class AdaptersDisabled(nn.Module):
    """The initial LM, for KL terms, without a second copy: the LoRA model run with its adapters off.

    Holds the peft model as a plain attribute, so ``.to()``, ``.eval()`` and ``.requires_grad_(False)`` on
    this reference never touch the policy's adapters.
    """

    def __init__(self, peft_lm: nn.Module):
        super().__init__()
        self.__dict__["peft_lm"] = peft_lm

    @property
    def config(self):
        return self.peft_lm.config

    @property
    def device(self):
        return self.peft_lm.device

    def get_base_model(self) -> PreTrainedModel:
        return self.peft_lm.get_base_model()

    def forward(self, **kwargs: Any):
        with self.peft_lm.disable_adapter():
            return self.peft_lm(**kwargs)


def merged_copy(peft_lm: nn.Module) -> PreTrainedModel:
    """A plain ``transformers`` model with the adapters merged in (for ``save_pretrained``/``pipeline``)."""
    return copy.deepcopy(peft_lm).merge_and_unload()
