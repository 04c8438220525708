"""What defines a run: :class:`TrainConfig` (CLI flags and YAML keys map onto its fields). Both backends and
``lm-gym train/evaluate/compare`` import it; it imports none of them, and at import nothing heavy (no torch, SB3 or
transformers: ``lm-gym --help`` answers at once). The tasks an env id brings are in :mod:`agents.runs.tasks`."""

from __future__ import annotations

import dataclasses
import inspect
import json
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lm_gym import ENV_IDS

if typing.TYPE_CHECKING:
    from agents.runs.tasks import Task
    from lm_gym.prompts import Prompt
    from lm_gym.task_suite import SuiteTask

# The algorithms of each backend (agents.sb3.ALGORITHMS, agents.rllib.RLLIB_ALGORITHMS), named here so that the CLI
# answers without importing SB3 or Ray (tests check the names against both registries). lm-gym compare names RLlib's
# PPO "rllib_ppo" to tell it from SB3's.
BACKENDS = {"sb3": ("ppo", "a2c", "maskable_ppo", "trpo", "grpo", "dr_grpo", "rloo", "reinforce", "dqn", "qrdqn"),
            "rllib": ("ppo", "appo", "impala")}
# The tasks an env id names (agents.runs.tasks.TASKS): every registered env but the generic multi-turn one, which
# needs a text env.
TASK_IDS = tuple(env_id for env_id in ENV_IDS if env_id != "TextGen-MultiTurn-v0")
RLLIB_ONLY = ("num_env_runners", "num_envs_per_env_runner", "num_learners", "num_gpus_per_learner", "ray_address")


class ConfigTypeError(TypeError):
    """A TrainConfig value of the wrong type (``steps: "a lot"``); the message names the field and the fix."""


# What a run uses where neither the config nor the task's hyperparameters say otherwise.
DEFAULT_STEPS, DEFAULT_KL_COEF = 49_152, 0.05
# Group estimators on long episodes: rollouts of ROLLOUT_EPISODES token budgets per env (see _fit_rollouts_to_episodes).
LONG_EPISODE_TOKENS, ROLLOUT_EPISODES = 128, 12
ALGORITHM_HYPERPARAMETERS = ("learning_rate", "n_steps", "batch_size", "n_epochs")
LR_SCHEDULES = ("constant", "linear")  # "linear": from the learning rate at step 0 to 0 at the run's last step
TEXT_ENV_PREFIXES = ("gem:", "textarena:")


def resolve_algorithm(name: str) -> tuple[str, str]:
    """``(backend, algo)`` for a name of ``lm-gym compare --algos``: SB3's names as they are, RLlib's as
    ``rllib_ppo`` / ``appo`` / ``impala`` (or ``rllib_appo`` / ``rllib_impala``)."""
    if name in BACKENDS["sb3"]:
        return "sb3", name
    algo = name.removeprefix("rllib_")
    if algo in BACKENDS["rllib"] and (name != algo or algo not in BACKENDS["sb3"]):
        return "rllib", algo
    choices = sorted(BACKENDS["sb3"]) + sorted({"rllib_ppo", *BACKENDS["rllib"]} - {"ppo"})
    raise ValueError(f"unknown algorithm {name!r}; choose from {choices}.")


@dataclass
class TrainConfig:
    """Everything that defines a run. CLI flags and YAML keys map one to one onto these fields."""

    algo: str = "ppo"
    env: str = "TextGen-v0"  # the task: one of TASK_IDS or "gem:ID" (see agents.runs.tasks); it fills in the defaults
    model: str | None = None  # Hugging Face name or path; None: the env's bundled LM
    reward: str | None = None  # None: the env's ("sentiment"; "exact_match" for TextGen-Arithmetic-v0)
    reward_kwargs: dict[str, Any] = field(default_factory=dict)
    prompts: str | None = None  # .txt/.jsonl path, or a dataset name/path with prompt_column; None: bundled
    eval_prompts: str | None = None  # held-out prompts (same kinds); see prompt_sets()
    prompt_column: str | None = None  # set: `prompts` is a Hugging Face dataset and this its text column
    references_column: str | None = None
    split: str = "train"
    eval_split: str | None = None  # held-out split of the same dataset, e.g. "test"
    eval_fraction: float | None = None  # else: hold out this fraction of `prompts` (seeded by `seed`)
    max_new_tokens: int | None = None  # None: the env's (16; 4 for TextGen-Arithmetic-v0)
    steps: int | None = None  # None: the task's (agents.runs.tasks.TASKS[env].hyperparameters), else 49,152
    n_envs: int = 8
    # Algorithm hyperparameters: None keeps the algorithm's default (agents.sb3.algorithms.ALGORITHMS).
    learning_rate: float | None = None
    # "linear": the learning rate decays linearly to 0 over the run (RL Zoo's lin_ schedules); None: the task's,
    # else "constant"
    lr_schedule: str | None = None
    n_steps: int | None = None  # env steps per env per rollout (on-policy)
    batch_size: int | None = None
    n_epochs: int | None = None  # PPO, MaskablePPO
    group_size: int | None = None  # grpo, dr_grpo, rloo: completions per prompt (None: the algorithm's, 4)
    kl_coef: float | None = None  # on-policy algorithms; None: the task's, else 0.05
    kl_target: float | None = None  # nats per episode; None keeps kl_coef fixed
    lora: dict[str, Any] | None = None  # peft LoraConfig arguments, e.g. {"r": 8, "lora_alpha": 16}
    dtype: str | None = None  # LM weights, e.g. "bfloat16"
    autocast_dtype: str | None = None  # e.g. "bfloat16"; the action distribution stays float32
    # Recompute the rollout's log-probs with the update's forward before each update (SB3 on-policy algorithms);
    # None: on exactly when the LM runs in half precision (dtype or autocast_dtype), where the two paths differ.
    recompute_log_probs: bool | None = None
    seed: int = 0
    device: str = "auto"
    eval_samples: int = 8  # completions per held-out prompt, before and after
    checkpoint_every: int = 8192  # env steps between checkpoints; 0: none
    keep_checkpoints: int = 3  # the newest N checkpoints are kept, older ones deleted; 0: all
    # Seconds without env steps before the run stops with a checkpoint (None: max(120, 10 x the longest wait so
    # far), 600 before there is one; 0: never). See agents.runs.watchdog.
    stall_timeout: float | None = None
    log_samples: int = 4  # completions logged as text per rollout
    out: str = "runs"
    env_options: dict[str, Any] = field(default_factory=dict)  # any other TextGenEnv arguments
    # Backend: "sb3" (one process) or "rllib" (Ray RLlib: env runners, learners, clusters; lm-gym[rllib]).
    backend: str = "sb3"
    num_env_runners: int | None = None  # rllib: env runner processes (default 2; 0: the driver samples, PPO only)
    num_envs_per_env_runner: int | None = None  # rllib: envs per runner (default n_envs / num_env_runners)
    num_learners: int | None = None  # rllib: learner processes (default 0: the driver process learns)
    num_gpus_per_learner: float | None = None  # rllib (default 0)
    ray_address: str | None = None  # rllib: an existing Ray cluster ("auto", "ray://host:10001"); default: local

    def __post_init__(self) -> None:
        self._check_types()
        task = self.task
        requested_n_steps = self.n_steps
        self._apply_hyperparameters(task)
        if task.multi_turn:
            given = [name for name in ("reward", "max_new_tokens", "prompts", "eval_prompts", "eval_fraction",
                                       "eval_split", "prompt_column") if getattr(self, name) is not None]
            if given:
                raise ValueError(f"{', '.join(given)}: env={self.env!r} is multi-turn: its text env pays the rewards and "
                                 "deals the task instances; drop them (turn settings such as max_turns go in "
                                 "env_options).")
            return
        self.reward = task.reward if self.reward is None else self.reward
        self.max_new_tokens = task.max_new_tokens if self.max_new_tokens is None else self.max_new_tokens
        if requested_n_steps is None:
            self._fit_rollouts_to_episodes()

    def _fit_rollouts_to_episodes(self) -> None:
        """Group estimators drop the groups a rollout's edge cuts: a rollout of ``T`` steps keeps about ``1 - L / T``
        of the tokens of ``L``-token episodes (``group/used_fraction``). For long episodes (a budget of at least
        :data:`LONG_EPISODE_TOKENS`), rollouts default to :data:`ROLLOUT_EPISODES` budgets per env, which keeps over
        90%; the episode buffers store them in O(tokens)."""
        from agents.sb3.algorithms import ALGORITHMS

        spec = ALGORITHMS.get(self.algo) if self.backend == "sb3" else None
        if spec is None or spec.advantage is None or self.n_steps is None or self.max_new_tokens < LONG_EPISODE_TOKENS:
            return
        self.n_steps = max(self.n_steps, ROLLOUT_EPISODES * self.max_new_tokens)

    def _check_types(self) -> None:
        """Refuse a value of the wrong type (``steps: "a lot"`` or ``n_envs: "8"`` in a YAML file) by its field's
        annotation: an int where a float goes is fine, a bool is not a number."""
        hints = typing.get_type_hints(TrainConfig)
        for f in dataclasses.fields(self):
            value, hint = getattr(self, f.name), hints[f.name]
            members = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
            allowed = tuple(typing.get_origin(t) or t for t in members if t is not type(None))
            optional = type(None) in members
            if value is None and optional:
                continue
            if float in allowed:
                allowed += (int,)
            if isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed):
                continue
            names = " or ".join(t.__name__ for t in allowed if t is not int or float not in allowed)
            names += " or null" if optional else ""
            fix = (f"; in YAML write it without quotes, e.g. {f.name}: {_example(f.name, allowed)}"
                   if isinstance(value, str) else f", e.g. {f.name}: {_example(f.name, allowed)}")
            raise ConfigTypeError(f"{f.name}={value!r} ({type(value).__name__}): {f.name} takes {names}{fix}.")

    def _apply_hyperparameters(self, task: Task) -> None:
        """Fill the unset run fields from the task's tuned hyperparameters, then from the global defaults. The
        algorithm's own (learning rate, rollout size...) go to the policy-gradient algorithms that accept them
        (not TRPO, whose learning_rate is its critic's, nor the off-policy Q-learners)."""
        from agents.sb3.algorithms import ALGORITHMS

        spec = ALGORITHMS.get(self.algo) if self.backend == "sb3" else None
        accepted = inspect.signature(spec.cls.__init__).parameters if spec is not None else {}
        for name, value in task.hyperparameters.items():
            key = "learning_rate" if name == "lr_schedule" else name  # the schedule goes where the rate goes
            applies = key not in ALGORITHM_HYPERPARAMETERS or (
                spec is not None and spec.on_policy and self.algo != "trpo" and key in accepted)
            if applies and getattr(self, name) is None:
                setattr(self, name, value)
        if spec is not None:  # the algorithm's own values, so that config.yaml records what the run used
            for name in ALGORITHM_HYPERPARAMETERS:
                default = spec.kwargs.get(name, accepted[name].default if name in accepted else None)
                if getattr(self, name) is None and name in accepted and type(default) in (int, float):
                    setattr(self, name, default)
        self.steps = DEFAULT_STEPS if self.steps is None else self.steps
        self.kl_coef = DEFAULT_KL_COEF if self.kl_coef is None else self.kl_coef
        self.lr_schedule = "constant" if self.lr_schedule is None else self.lr_schedule

    @property
    def task(self) -> Task:
        from agents.runs.tasks import task_of

        return task_of(self.env)

    @property
    def suite_task(self) -> SuiteTask | None:
        """The task's entry in :func:`lm_gym.suite` (metric and held-out optimum), or None when it has none."""
        from lm_gym.task_suite import suite_task

        return suite_task(self.env)

    @property
    def lm(self) -> str | None:
        """The LM to train: ``model``, else the env's bundled one (``None``: the bundled tiny LM)."""
        return self.task.model if self.model is None else self.model

    def validate(self) -> None:
        """Refuse a backend, algorithm or option that does not fit, naming the fix."""
        if self.backend not in BACKENDS:
            raise ValueError(f"backend={self.backend!r}: choose one of {list(BACKENDS)}.")
        algorithms = BACKENDS[self.backend]
        if self.algo not in algorithms:
            other = next((b for b, names in BACKENDS.items() if self.algo in names), None)
            hint = f" algo={self.algo!r} is an {other} algorithm: add --backend {other}." if other else ""
            raise ValueError(f"algo={self.algo!r}: backend {self.backend!r} trains {sorted(algorithms)}.{hint}")
        if self.group_size is not None:
            from agents.sb3.algorithms import ALGORITHMS

            grouped = [name for name, spec in ALGORITHMS.items() if spec.group_size > 1]
            if self.backend != "sb3" or self.algo not in grouped:
                raise ValueError(f"group_size={self.group_size}: only {', '.join(grouped)} sample groups of "
                                 "completions per prompt; drop group_size.")
        if self.backend == "sb3":
            given = [f.name for f in dataclasses.fields(self) if f.name in RLLIB_ONLY and getattr(self, f.name) is not None]
            if given:
                raise ValueError(f"{', '.join(given)}: only the rllib backend takes {'them' if len(given) > 1 else 'it'}; "
                                 "add --backend rllib.")

        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule={self.lr_schedule!r}: choose one of {list(LR_SCHEDULES)}.")
        self._check_ranges()

    def _check_ranges(self) -> None:
        import torch  # here, not at import: the CLI's --help stays fast

        positive = ("steps", "n_envs", "learning_rate", "n_steps", "batch_size", "n_epochs", "max_new_tokens",
                    "kl_target", "num_envs_per_env_runner")
        for name in positive:
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name}={value}: it must be positive (leave it unset for the default).")
        for name in ("kl_coef", "eval_samples", "checkpoint_every", "keep_checkpoints", "log_samples",
                     "num_learners", "num_gpus_per_learner", "stall_timeout", "num_env_runners"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name}={value}: it must be 0 or more.")
        if self.group_size is not None and self.group_size < 2:
            raise ValueError(f"group_size={self.group_size}: a group needs at least 2 completions per prompt.")
        if self.eval_fraction is not None and not 0 < self.eval_fraction < 1:
            raise ValueError(f"eval_fraction={self.eval_fraction}: hold out a fraction between 0 and 1, e.g. 0.1.")
        try:
            device = torch.device("cpu" if self.device == "auto" else self.device)
        except RuntimeError:
            raise ValueError(f"device={self.device!r}: use auto, cpu, cuda or cuda:N.") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={self.device!r}: torch finds no CUDA GPU on this machine; use --device cpu "
                             "(or auto, which takes a GPU when there is one).")

    def run_name(self) -> str:
        """The run directory's prefix: the algorithm, and the backend when it is not SB3."""
        return self.algo if self.backend == "sb3" else f"rllib_{self.algo}"

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        return cls.from_dict(read_yaml(path), source=str(path))

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{source}: unknown keys {unknown}; valid keys are {sorted(known)}.")
        return cls(**values)

    def to_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(asdict(self), sort_keys=False))

    def _prompts(self, source: str, split: str) -> list[Prompt]:
        from lm_gym.prompts import dataset_prompts, load_prompts

        if self.prompt_column is not None:
            return dataset_prompts(source, self.prompt_column, split, self.references_column)
        return load_prompts(source)

    def prompt_sets(self) -> tuple[list[Prompt], list[Prompt]]:
        """(training, held-out) prompts. Training: ``prompts``, else the env's. Held out: ``eval_prompts``, else
        ``eval_split`` of the dataset, else ``eval_fraction`` of ``prompts``, else the env's held-out set (the
        bundled review openings; the 500 test problems of TextGen-Arithmetic-v0)."""
        task = self.task
        if task.multi_turn:
            raise ValueError(f"env={self.env!r} is multi-turn: it has task instances, not prompts (held_out_instances).")
        train = task.train_prompts() if self.prompts is None else self._prompts(self.prompts, self.split)
        if self.eval_prompts is not None:
            return train, self._prompts(self.eval_prompts, self.eval_split or self.split)
        if self.eval_split is not None:
            return train, self._prompts(self.prompts, self.eval_split)
        if self.eval_fraction is not None:
            from lm_gym.prompts import split_prompts

            return split_prompts(train, self.eval_fraction, seed=self.seed)
        return train, task.held_out_prompts()

    @property
    def recomputes_log_probs(self) -> bool:
        if self.recompute_log_probs is not None:
            return self.recompute_log_probs
        return self.dtype in ("bfloat16", "float16") or self.autocast_dtype is not None

    def env_kwargs(self, split: str = "train") -> dict[str, Any]:
        """The env's arguments: ``TextGenEnv``'s (prompts aside), or a multi-turn task's ``MultiTurnEnv`` arguments
        for ``split`` (``"train"``; ``"test"``: the held-out instances' env)."""
        task = self.task
        if task.multi_turn:
            return {**task.env_kwargs(split), "model": self.lm, **self.env_options}
        return dict(model=self.lm, reward=self.reward, reward_kwargs=self.reward_kwargs,
                    max_new_tokens=self.max_new_tokens, **self.env_options)

    def algorithm_kwargs(self) -> dict[str, Any]:
        policy_kwargs = {k: v for k, v in (("lora", self.lora), ("dtype", self.dtype),
                                           ("autocast_dtype", self.autocast_dtype)) if v is not None}
        return dict(learning_rate=self.learning_rate, n_steps=self.n_steps, batch_size=self.batch_size,
                    n_epochs=self.n_epochs, policy_kwargs=policy_kwargs)


def _example(name: str, allowed: tuple[type, ...]) -> str:
    """A value of the right type for :meth:`TrainConfig._check_types`' message: the field's default, else a stand-in."""
    default = next(f.default for f in dataclasses.fields(TrainConfig) if f.name == name)
    if default is not None and default is not dataclasses.MISSING:
        return json.dumps(default) if isinstance(default, str) else str(default)
    return {float: "0.001", int: "8", str: '"text"', bool: "true", dict: "{key: value}"}[next(iter(allowed))]


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A config file's keys as written: fields it leaves out stay unset, so flags such as --env can still
    fill them with their own defaults (TrainConfig resolves them only once everything is merged)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config={str(path)!r}: no such file; give a YAML file of TrainConfig fields (a run's "
                                "config.yaml works).")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ValueError(f"config={str(path)!r} is not valid YAML: {' '.join(str(error).split())}") from None
    if not isinstance(values, dict):
        raise ValueError(f"config={str(path)!r} holds a {type(values).__name__}; it must map field names to values "
                         "(steps: 8192).")
    return values


