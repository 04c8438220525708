"""Ray RLlib backend: the same LM as an RLModule (LMRLModule), KL shaping as a learner connector, and RLlib's
PPO, APPO and IMPALA configured for TextGen-v0 (``rllib_config``). Needs ``pip install "lm-gym[rllib]"``."""

try:
    import ray.rllib  # noqa: F401
except ImportError as error:  # name the extra, not the missing module
    raise ImportError("the RLlib backend needs Ray RLlib: pip install 'lm-gym[rllib]'") from error

from agents.rllib.algorithms import (ENV_ID, RLLIB_ALGORITHMS, check_resources, make_env, register_text_gen_env,
                                     rllib_config, trained_module)
from agents.rllib.kl import KLControllerCallback, KLShaping, set_kl_coef
from agents.rllib.module import LMRLModule

__all__ = ["ENV_ID", "KLControllerCallback", "KLShaping", "LMRLModule", "RLLIB_ALGORITHMS", "check_resources",
           "make_env", "register_text_gen_env", "rllib_config", "set_kl_coef", "trained_module"]
