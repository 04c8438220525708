"""One training run: env and algorithm from a config, KL shaping, checkpoints, before/after report, exports.

A run directory holds ``config.yaml`` (the resolved config), ``before.json``, ``checkpoints/``,
``tensorboard/`` and, once finished, ``model.zip`` (SB3), ``lm/`` (Hugging Face) and ``summary.json``.
"""

from __future__ import annotations

import dataclasses
import json
import time
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import yaml
from rich.console import Console
from rich.table import Table
from stable_baselines3.common.callbacks import BaseCallback
from tqdm import TqdmExperimentalWarning

from agents.sb3.algorithms import ALGORITHMS, make_algorithm
from agents.runs.checkpoints import CheckpointCallback, CheckpointError, checkpoint_dirs, load_checkpoint
from agents.runs.samples import episodes_to_dicts, sample_episodes, summarize
from agents.sb3.kl import KLPenaltyCallback
from agents.sb3.sample_logging import SampleLogCallback
from lm_gym.env import TextGenEnv
from lm_gym.prompts import HELDOUT_PROMPTS, Prompt, dataset_prompts, load_prompts, split_prompts
from lm_gym.vector import make_vec_env


@dataclass
class TrainConfig:
    """Everything that defines a run. CLI flags and YAML keys map one to one onto these fields."""

    algo: str = "ppo"
    model: str | None = None  # Hugging Face name or path; None: the bundled tiny LM
    reward: str = "sentiment"
    reward_kwargs: dict[str, Any] = field(default_factory=dict)
    prompts: str | None = None  # .txt/.jsonl path, or a dataset name/path with prompt_column; None: bundled
    eval_prompts: str | None = None  # held-out prompts (same kinds); see prompt_sets()
    prompt_column: str | None = None  # set: `prompts` is a Hugging Face dataset and this its text column
    references_column: str | None = None
    split: str = "train"
    eval_split: str | None = None  # held-out split of the same dataset, e.g. "test"
    eval_fraction: float | None = None  # else: hold out this fraction of `prompts` (seeded by `seed`)
    max_new_tokens: int = 16
    steps: int = 49_152
    n_envs: int = 8
    # Algorithm hyperparameters: None keeps the algorithm's default (agents.sb3.algorithms.ALGORITHMS).
    learning_rate: float | None = None
    n_steps: int | None = None  # env steps per env per rollout (on-policy)
    batch_size: int | None = None
    n_epochs: int | None = None  # PPO, MaskablePPO
    kl_coef: float = 0.05  # on-policy algorithms
    kl_target: float | None = None  # nats per episode; None keeps kl_coef fixed
    lora: dict[str, Any] | None = None  # peft LoraConfig arguments, e.g. {"r": 8, "lora_alpha": 16}
    dtype: str | None = None  # LM weights, e.g. "bfloat16"
    autocast_dtype: str | None = None  # e.g. "bfloat16"; the action distribution stays float32
    seed: int = 0
    device: str = "auto"
    eval_samples: int = 8  # completions per held-out prompt, before and after
    checkpoint_every: int = 8192  # env steps between checkpoints; 0: none
    log_samples: int = 4  # completions logged as text per rollout
    out: str = "runs"
    env_options: dict[str, Any] = field(default_factory=dict)  # any other TextGenEnv arguments

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        values = yaml.safe_load(Path(path).read_text()) or {}
        return cls.from_dict(values, source=str(path))

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{source}: unknown keys {unknown}; valid keys are {sorted(known)}.")
        return cls(**values)

    def to_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(asdict(self), sort_keys=False))

    def _prompts(self, source: str | None, split: str) -> list[Prompt]:
        if self.prompt_column is not None:
            return dataset_prompts(source, self.prompt_column, split, self.references_column)
        return load_prompts(source)

    def prompt_sets(self) -> tuple[list[Prompt], list[Prompt]]:
        """(training, held-out) prompts. Held out: ``eval_prompts``, else ``eval_split`` of the dataset, else
        ``eval_fraction`` of ``prompts``, else the bundled held-out review openings."""
        train = self._prompts(self.prompts, self.split)
        if self.eval_prompts is not None:
            return train, self._prompts(self.eval_prompts, self.eval_split or self.split)
        if self.eval_split is not None:
            return train, self._prompts(self.prompts, self.eval_split)
        if self.eval_fraction is not None:
            return split_prompts(train, self.eval_fraction, seed=self.seed)
        return train, load_prompts(HELDOUT_PROMPTS)

    def env_kwargs(self) -> dict[str, Any]:
        return dict(model=self.model, reward=self.reward, reward_kwargs=self.reward_kwargs,
                    max_new_tokens=self.max_new_tokens, **self.env_options)

    def algorithm_kwargs(self) -> dict[str, Any]:
        policy_kwargs = {k: v for k, v in (("lora", self.lora), ("dtype", self.dtype),
                                           ("autocast_dtype", self.autocast_dtype)) if v is not None}
        return dict(learning_rate=self.learning_rate, n_steps=self.n_steps, batch_size=self.batch_size,
                    n_epochs=self.n_epochs, policy_kwargs=policy_kwargs)


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


def make_eval_env(config: TrainConfig) -> tuple[TextGenEnv, list[Prompt], list[str]]:
    """The single env that samples held-out completions, the training prompts and the held-out prompt texts.

    It knows both prompt sets, so its observation window (which the training envs reuse) fits both.
    """
    train_prompts, held_out = config.prompt_sets()
    eval_env = TextGenEnv(**{**config.env_kwargs(), "prompts": train_prompts + held_out})
    return eval_env, train_prompts, [p.text for p in held_out]


def make_envs(config: TrainConfig) -> tuple[Any, TextGenEnv, list[str]]:
    """Training VecEnv, the eval env and the held-out prompt texts, all with one observation window."""
    eval_env, train_prompts, held_out = make_eval_env(config)
    # The eval env's reward object is shared: a classifier reward then sits in memory once.
    env_kwargs = {**config.env_kwargs(), "reward": eval_env.reward, "reward_kwargs": None}
    vec_env = make_vec_env(n_envs=config.n_envs, seed=config.seed,
                           **{**env_kwargs, "prompts": train_prompts, "max_prompt_tokens": eval_env.max_prompt_tokens})
    return vec_env, eval_env, held_out


def train(config: TrainConfig | None = None, resume: str | Path | None = None, console: Console | None = None,
          callbacks: list[BaseCallback] = ()) -> Path:
    """Train (or, with ``resume=RUN``, continue RUN from its last checkpoint), report, save; returns the run dir.

    ``callbacks`` are extra SB3 callbacks, run alongside lm-gym's own.
    """
    console = console or Console()
    if resume is not None:
        run_dir = Path(resume)
        config = TrainConfig.from_yaml(run_dir / "config.yaml")
        if (run_dir / "model.zip").exists():
            raise FileExistsError(f"{run_dir} finished already (model.zip exists); start a new run instead.")
        checkpoints = checkpoint_dirs(run_dir)
        if not checkpoints:
            raise CheckpointError(f"{run_dir} has no checkpoint to resume from (checkpoints/step-*).")
    else:
        config = config or TrainConfig()
        if config.algo not in ALGORITHMS:
            raise ValueError(f"algo={config.algo!r}: choose one of {sorted(ALGORITHMS)}.")
    spec = ALGORITHMS[config.algo]
    vec_env, eval_env, held_out = make_envs(config)
    kl = KLPenaltyCallback(coef=config.kl_coef, target=config.kl_target) if spec.on_policy else None
    if resume is not None:
        algorithm = load_checkpoint(checkpoints[-1], spec.cls, vec_env, device=config.device, kl=kl)
    else:
        run_dir = new_run_dir(config.out, config.algo)
        config.to_yaml(run_dir / "config.yaml")
        algorithm = make_algorithm(config.algo, vec_env, model=config.model, seed=config.seed, device=config.device,
                                   tensorboard_log=_tensorboard_dir(run_dir), **config.algorithm_kwargs())
    if config.prompts is not None and config.eval_prompts is None and config.eval_split is None \
            and config.eval_fraction is None:
        console.print("note: no held-out prompts given (eval_prompts, eval_split or eval_fraction); the report uses "
                      "the bundled held-out review openings.")
    policy = algorithm.policy
    reference = policy.load_reference_model()
    if kl is not None:
        kl.reference = reference
    else:
        console.print(f"note: KL shaping applies to on-policy algorithms; {config.algo} trains on the task reward "
                      "alone (its KL to the initial LM is still reported).")

    def evaluate():
        torch.manual_seed(config.seed)
        episodes = sample_episodes(policy, eval_env, held_out, config.eval_samples, reference=reference)
        return summarize(episodes), episodes

    done = algorithm.num_timesteps
    console.print(f"[bold]lm-gym train[/bold]: {config.algo} on TextGen-v0, reward={config.reward!r}, "
                  f"model={config.model or 'bundled tiny LM'}, {config.steps} steps on {policy.device} -> {run_dir}"
                  + (f" (resuming at step {done})" if resume is not None else ""))
    if resume is None:
        before, before_episodes = evaluate()
        before_samples = episodes_to_dicts(before_episodes)
        (run_dir / "before.json").write_text(json.dumps({"stats": before, "samples": before_samples}))
    else:  # measured when the run started
        saved = json.loads((run_dir / "before.json").read_text())
        before, before_samples = saved["stats"], saved["samples"]

    own = [SampleLogCallback(config.log_samples)]
    if kl is not None:
        own.append(kl)
    if config.checkpoint_every:
        own.append(CheckpointCallback(run_dir / "checkpoints", config.checkpoint_every, kl))
    start = time.perf_counter()
    with warnings.catch_warnings():  # SB3's progress bar is tqdm.rich, which calls itself experimental each time
        warnings.filterwarnings("ignore", category=TqdmExperimentalWarning)
        algorithm.learn(total_timesteps=config.steps - done, callback=[*own, *callbacks], progress_bar=True,
                        reset_num_timesteps=resume is None, tb_log_name="train")
    train_seconds = time.perf_counter() - start
    after, after_episodes = evaluate()
    after_samples = episodes_to_dicts(after_episodes)
    print_report(console, before, after, before_samples, after_samples, len(held_out), config.eval_samples)

    algorithm.save(run_dir / "model.zip")
    policy.save_pretrained(run_dir / "lm")
    summary = {"config": asdict(config), "train_seconds": train_seconds, "resumed_at": done or None,
               "before": before, "after": after, "samples_before": before_samples, "samples_after": after_samples}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    console.print(f"trained in {train_seconds:.0f} s; saved {run_dir}/model.zip (SB3), {run_dir}/lm (Hugging Face), "
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


def _tensorboard_dir(run_dir: Path) -> str | None:
    try:
        import tensorboard  # noqa: F401  (SB3 writes TensorBoard events only when it is installed)
    except ImportError:
        return None
    return str(run_dir / "tensorboard")
