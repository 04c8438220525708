"""One training run, on either backend: config, run directory, before/after held-out report, exports.

A run directory holds ``config.yaml`` (the resolved config), ``before.json``, ``checkpoints/`` and, once
finished, the backend's own save (``model.zip`` for SB3, ``algorithm/`` for RLlib), ``lm/`` (Hugging Face)
and ``summary.json``; SB3 runs also ``tensorboard/``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import asdict, dataclass, field
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import yaml
from rich.console import Console
from rich.table import Table
from stable_baselines3.common.callbacks import BaseCallback

from agents.runs.checkpoints import CheckpointError, checkpoint_dirs
from agents.runs.progress import progress_bar
from agents.runs.samples import episodes_to_dicts, sample_episodes, summarize
from agents.runs.sb3_backend import SB3Trainer
from agents.sb3.algorithms import ALGORITHMS
from lm_gym.arithmetic import arithmetic_defaults, arithmetic_problems
from lm_gym.env import TextGenEnv
from lm_gym.prompts import DEFAULT_PROMPTS, HELDOUT_PROMPTS, Prompt, dataset_prompts, load_prompts, split_prompts

# The algorithms of each backend (agents.sb3.ALGORITHMS; agents.rllib.RLLIB_ALGORITHMS, named here so that the
# CLI works without Ray installed). lm-gym compare names RLlib's PPO "rllib_ppo" to tell it from SB3's.
BACKENDS = {"sb3": tuple(ALGORITHMS), "rllib": ("ppo", "appo", "impala")}
RLLIB_ONLY = ("num_env_runners", "num_envs_per_env_runner", "num_learners", "num_gpus_per_learner", "ray_address")


@dataclass(frozen=True)
class Task:
    """What an env id brings to a run: its LM, reward, token budget and (training, held-out) prompts, used
    wherever the config leaves them unset."""

    model: str | None  # None: the bundled tiny LM
    reward: str
    max_new_tokens: int
    train_prompts: Callable[[], list[Prompt]]
    held_out_prompts: Callable[[], list[Prompt]]


TASKS = {
    "TextGen-v0": Task(None, "sentiment", 16, lambda: load_prompts(DEFAULT_PROMPTS),
                       lambda: load_prompts(HELDOUT_PROMPTS)),
    # The env's own defaults (model, reward, max_new_tokens), so the two never disagree.
    "TextGen-Arithmetic-v0": Task(**arithmetic_defaults(), train_prompts=lambda: arithmetic_problems("train"),
                                  held_out_prompts=lambda: arithmetic_problems("test")),
}


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
    env: str = "TextGen-v0"  # the task: a key of TASKS; it fills in model, reward, max_new_tokens and prompts
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
    steps: int = 49_152
    n_envs: int = 8
    # Algorithm hyperparameters: None keeps the algorithm's default (agents.sb3.algorithms.ALGORITHMS).
    learning_rate: float | None = None
    n_steps: int | None = None  # env steps per env per rollout (on-policy)
    batch_size: int | None = None
    n_epochs: int | None = None  # PPO, MaskablePPO
    group_size: int | None = None  # grpo, dr_grpo, rloo: completions per prompt (None: the algorithm's, 4)
    kl_coef: float = 0.05  # on-policy algorithms
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
    log_samples: int = 4  # completions logged as text per rollout
    out: str = "runs"
    env_options: dict[str, Any] = field(default_factory=dict)  # any other TextGenEnv arguments
    # Backend: "sb3" (one process) or "rllib" (Ray RLlib: env runners, learners, clusters; lm-gym[rllib]).
    backend: str = "sb3"
    num_env_runners: int | None = None  # rllib: env runner processes (default 2)
    num_envs_per_env_runner: int | None = None  # rllib: envs per runner (default n_envs / num_env_runners)
    num_learners: int | None = None  # rllib: learner processes (default 0: the driver process learns)
    num_gpus_per_learner: float | None = None  # rllib (default 0)
    ray_address: str | None = None  # rllib: an existing Ray cluster ("auto", "ray://host:10001"); default: local

    def __post_init__(self) -> None:
        if self.env not in TASKS:
            raise ValueError(f"env={self.env!r}: choose one of {list(TASKS)}.")
        task = TASKS[self.env]
        self.reward = task.reward if self.reward is None else self.reward
        self.max_new_tokens = task.max_new_tokens if self.max_new_tokens is None else self.max_new_tokens

    @property
    def lm(self) -> str | None:
        """The LM to train: ``model``, else the env's bundled one (``None``: the bundled tiny LM)."""
        return TASKS[self.env].model if self.model is None else self.model

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
            grouped = [name for name, spec in ALGORITHMS.items() if spec.group_size > 1]
            if self.backend != "sb3" or self.algo not in grouped:
                raise ValueError(f"group_size={self.group_size}: only {', '.join(grouped)} sample groups of "
                                 "completions per prompt; drop group_size.")
        if self.backend == "sb3":
            given = [f.name for f in dataclasses.fields(self) if f.name in RLLIB_ONLY and getattr(self, f.name) is not None]
            if given:
                raise ValueError(f"{', '.join(given)}: only the rllib backend takes {'them' if len(given) > 1 else 'it'}; "
                                 "add --backend rllib.")

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
        if self.prompt_column is not None:
            return dataset_prompts(source, self.prompt_column, split, self.references_column)
        return load_prompts(source)

    def prompt_sets(self) -> tuple[list[Prompt], list[Prompt]]:
        """(training, held-out) prompts. Training: ``prompts``, else the env's. Held out: ``eval_prompts``, else
        ``eval_split`` of the dataset, else ``eval_fraction`` of ``prompts``, else the env's held-out set (the
        bundled review openings; the 500 test problems of TextGen-Arithmetic-v0)."""
        task = TASKS[self.env]
        train = task.train_prompts() if self.prompts is None else self._prompts(self.prompts, self.split)
        if self.eval_prompts is not None:
            return train, self._prompts(self.eval_prompts, self.eval_split or self.split)
        if self.eval_split is not None:
            return train, self._prompts(self.prompts, self.eval_split)
        if self.eval_fraction is not None:
            return split_prompts(train, self.eval_fraction, seed=self.seed)
        return train, task.held_out_prompts()

    @property
    def recomputes_log_probs(self) -> bool:
        if self.recompute_log_probs is not None:
            return self.recompute_log_probs
        return self.dtype in ("bfloat16", "float16") or self.autocast_dtype is not None

    def env_kwargs(self) -> dict[str, Any]:
        return dict(model=self.lm, reward=self.reward, reward_kwargs=self.reward_kwargs,
                    max_new_tokens=self.max_new_tokens, **self.env_options)

    def algorithm_kwargs(self) -> dict[str, Any]:
        policy_kwargs = {k: v for k, v in (("lora", self.lora), ("dtype", self.dtype),
                                           ("autocast_dtype", self.autocast_dtype)) if v is not None}
        return dict(learning_rate=self.learning_rate, n_steps=self.n_steps, batch_size=self.batch_size,
                    n_epochs=self.n_epochs, policy_kwargs=policy_kwargs)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A config file's keys as written: fields it leaves out stay unset, so flags such as --env can still
    fill them with their own defaults (TrainConfig resolves them only once everything is merged)."""
    return yaml.safe_load(Path(path).read_text()) or {}


def new_run_dir(base: str | Path, name: str) -> Path:
    """A fresh directory under ``base``; an existing run is never reused or overwritten."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for suffix in ["", *(f"-{i}" for i in range(1, 1000))]:
        path = Path(base) / f"{name}-{stamp}{suffix}"
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a new run directory under {base}")


def make_eval_env(config: TrainConfig) -> tuple[TextGenEnv, list[Prompt], list[Prompt]]:
    """The single env that samples held-out completions, the training prompts and the held-out prompts.

    It knows both prompt sets, so its observation window (which the training envs reuse) fits both.
    """
    train_prompts, held_out = config.prompt_sets()
    eval_env = TextGenEnv(**{**config.env_kwargs(), "prompts": train_prompts + held_out})
    return eval_env, train_prompts, held_out


def make_trainer(config: TrainConfig, eval_env: TextGenEnv, train_prompts: list[Prompt], run_dir: Path | None,
                 resume_from: Path | None = None):
    """The backend's trainer: :class:`agents.runs.sb3_backend.SB3Trainer` or
    :class:`agents.runs.rllib_backend.RLlibTrainer` (imported only then: it needs lm-gym[rllib])."""
    if config.backend == "rllib":
        try:
            from agents.runs.rllib_backend import RLlibTrainer
        except ImportError as error:
            raise ImportError(f"backend='rllib' needs Ray RLlib: pip install 'lm-gym[rllib]' ({error})") from error
        return RLlibTrainer(config, eval_env, train_prompts, run_dir, resume_from)
    return SB3Trainer(config, eval_env, train_prompts, run_dir, resume_from)


def train(config: TrainConfig | None = None, resume: str | Path | None = None, console: Console | None = None,
          callbacks: list[BaseCallback] = ()) -> Path:
    """Train (or, with ``resume=RUN``, continue RUN from its last checkpoint), report, save; returns the run dir.

    ``callbacks`` are extra SB3 callbacks, run alongside lm-gym's own (SB3 backend only).
    """
    console = console or Console()
    if resume is not None:
        run_dir = Path(resume)
        config = TrainConfig.from_yaml(run_dir / "config.yaml")
        if (run_dir / "summary.json").exists():
            raise FileExistsError(f"{run_dir} finished already (summary.json exists); start a new run instead.")
        checkpoints = checkpoint_dirs(run_dir)
        if not checkpoints:
            raise CheckpointError(f"{run_dir} has no checkpoint to resume from (checkpoints/step-*).")
    else:
        config = config or TrainConfig()
        config.validate()
        run_dir = new_run_dir(config.out, config.run_name())
        config.to_yaml(run_dir / "config.yaml")
    if callbacks and config.backend != "sb3":
        raise ValueError("callbacks= are SB3 callbacks; RLlib runs take RLlib callbacks in their AlgorithmConfig.")
    eval_env, train_prompts, held_out = make_eval_env(config)
    if config.prompts is not None and config.eval_prompts is None and config.eval_split is None \
            and config.eval_fraction is None:
        console.print("note: no held-out prompts given (eval_prompts, eval_split or eval_fraction); the report uses "
                      "the bundled held-out review openings.")
    trainer = make_trainer(config, eval_env, train_prompts, run_dir, checkpoints[-1] if resume is not None else None)
    try:
        for note in trainer.notes:
            console.print(f"note: {note}")

        def evaluate():
            torch.manual_seed(config.seed)
            episodes = sample_episodes(trainer.policy, eval_env, held_out, config.eval_samples,
                                       reference=trainer.reference)
            return summarize(episodes), episodes

        done = trainer.num_timesteps
        console.print(f"[bold]lm-gym train[/bold]: {config.backend} {config.algo} on {config.env}, "
                      f"reward={config.reward!r}, model={config.model or 'bundled'}, {config.steps} steps on "
                      f"{trainer.device} -> {run_dir}" + (f" (resuming at step {done})" if resume is not None else ""))
        if resume is None:
            before, before_episodes = evaluate()
            before_samples = episodes_to_dicts(before_episodes)
            (run_dir / "before.json").write_text(json.dumps({"stats": before, "samples": before_samples}))
        else:  # measured when the run started
            saved = json.loads((run_dir / "before.json").read_text())
            before, before_samples = saved["stats"], saved["samples"]

        start = time.perf_counter()
        with progress_bar(console, config.steps, done) as observe:
            trainer.learn(config.steps, [observe], **({"callbacks": callbacks} if callbacks else {}))
        train_seconds = time.perf_counter() - start
        after, after_episodes = evaluate()
        after_samples = episodes_to_dicts(after_episodes)
        print_report(console, before, after, before_samples, after_samples, len(held_out), config.eval_samples)

        trainer.save(run_dir)
        trainer.policy.save_pretrained(run_dir / "lm")
    finally:
        trainer.close()
    summary = {"config": asdict(config), "train_seconds": train_seconds, "resumed_at": done or None,
               "before": before, "after": after, "samples_before": before_samples, "samples_after": after_samples}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    saved = ", ".join(f"{run_dir}/{name}" for name in trainer.final_files)
    console.print(f"trained in {train_seconds:.0f} s; saved {saved} ({config.backend}), {run_dir}/lm (Hugging Face), "
                  f"{run_dir}/summary.json")
    return run_dir


def print_report(console: Console, before: dict, after: dict, before_samples: list[dict], after_samples: list[dict],
                 n_prompts: int, per_prompt: int) -> None:
    table = Table(title=f"held-out prompts ({n_prompts} x {per_prompt} samples)")
    for column in ("", "reward", "KL to initial LM (nats)", "distinct-2", "tokens"):
        table.add_column(column)
    for name, stats in (("before", before), ("after", after)):
        table.add_row(name, f"{stats['reward_mean']:+.3f} ± {stats['reward_std']:.3f}", f"{stats['kl_mean']:.2f}",
                      f"{stats['distinct_2']:.2f}", f"{stats['length_mean']:.1f}")
    console.print(table)
    samples = Table(title="samples (first per prompt)")
    for column in ("prompt", "before", "after"):
        samples.add_column(column)
    for i in range(0, min(len(before_samples), 4 * per_prompt), per_prompt):
        b, a = before_samples[i], after_samples[i]
        samples.add_row(b["prompt"], f"{b['completion']} [{b['reward']:+.2f}]", f"{a['completion']} [{a['reward']:+.2f}]")
    console.print(samples)
