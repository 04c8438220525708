"""One training run: build the env and the algorithm, train with KL shaping, report before/after, save."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from agents.algorithms import ALGORITHMS, make_algorithm
from agents.evaluation import episodes_to_dicts, sample_episodes, summarize
from agents.kl import KLPenaltyCallback
from lm_gym.env import TextGenEnv
from lm_gym.models import load_causal_lm
from lm_gym.prompts import HELDOUT_PROMPTS, load_prompts
from lm_gym.vector import make_vec_env


@dataclass
class TrainConfig:
    """Everything that defines a run; the CLI flags map one to one onto these fields."""

    algo: str = "ppo"
    model: str | None = None  # None: the bundled tiny LM
    reward: str = "sentiment"
    reward_kwargs: dict[str, Any] = field(default_factory=dict)
    prompts: str | None = None  # None: the bundled training prompts
    eval_prompts: str | None = None  # None: the bundled held-out prompts
    max_new_tokens: int = 16
    steps: int = 49_152
    n_envs: int = 8
    # Algorithm hyperparameters: None keeps the algorithm's default (agents.algorithms.ALGORITHMS).
    learning_rate: float | None = None
    n_steps: int | None = None  # env steps per env per rollout (on-policy)
    batch_size: int | None = None
    n_epochs: int | None = None  # PPO, MaskablePPO
    kl_coef: float = 0.05  # on-policy algorithms
    kl_target: float | None = None  # nats per episode; None keeps kl_coef fixed
    seed: int = 0
    device: str = "auto"
    eval_samples: int = 8  # completions per held-out prompt, before and after
    out: str = "runs"
    env_options: dict[str, Any] = field(default_factory=dict)  # any other TextGenEnv arguments

    def env_kwargs(self) -> dict[str, Any]:
        return dict(model=self.model, reward=self.reward, reward_kwargs=self.reward_kwargs, prompts=self.prompts,
                    max_new_tokens=self.max_new_tokens, **self.env_options)

    def algorithm_kwargs(self) -> dict[str, Any]:
        return dict(learning_rate=self.learning_rate, n_steps=self.n_steps, batch_size=self.batch_size,
                    n_epochs=self.n_epochs)


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


def make_envs(config: TrainConfig) -> tuple[Any, TextGenEnv, list[str]]:
    """Training VecEnv, a single eval env and the held-out prompt texts, all with one observation window."""
    env_kwargs = config.env_kwargs()
    held_out = load_prompts(config.eval_prompts or HELDOUT_PROMPTS)
    # The eval env knows both prompt sets, so the training window also fits the held-out prompts.
    eval_env = TextGenEnv(**{**env_kwargs, "prompts": load_prompts(config.prompts) + held_out})
    env_kwargs["max_prompt_tokens"] = eval_env.max_prompt_tokens
    vec_env = make_vec_env(n_envs=config.n_envs, seed=config.seed, **env_kwargs)
    return vec_env, eval_env, [p.text for p in held_out]


def train(config: TrainConfig, console: Console | None = None) -> Path:
    """Train, print reward/KL and samples before vs after, save everything into a new run directory."""
    console = console or Console()
    if config.algo not in ALGORITHMS:
        raise ValueError(f"algo={config.algo!r}: choose one of {sorted(ALGORITHMS)}.")
    vec_env, eval_env, held_out = make_envs(config)
    algorithm = make_algorithm(config.algo, vec_env, model=config.model, seed=config.seed, device=config.device,
                               **config.algorithm_kwargs())
    policy = algorithm.policy
    reference = load_causal_lm(config.model).to(policy.device).eval().requires_grad_(False)
    callbacks = []
    if ALGORITHMS[config.algo].on_policy:
        kl_callback = KLPenaltyCallback(coef=config.kl_coef, target=config.kl_target)
        kl_callback.reference = reference
        callbacks.append(kl_callback)
    else:
        console.print(f"note: KL shaping applies to on-policy algorithms; {config.algo} trains on the task reward "
                      "alone (its KL to the initial LM is still reported).")

    def evaluate():
        torch.manual_seed(config.seed)
        episodes = sample_episodes(policy, eval_env, held_out, config.eval_samples, reference=reference)
        return summarize(episodes), episodes

    run_dir = new_run_dir(config.out, config.algo)
    console.print(f"[bold]lm-gym train[/bold]: {config.algo} on TextGen-v0, reward={config.reward!r}, "
                  f"model={config.model or 'bundled tiny LM'}, {config.steps} steps on {policy.device} -> {run_dir}")
    before, before_episodes = evaluate()
    start = time.perf_counter()
    algorithm.learn(total_timesteps=config.steps, callback=callbacks, progress_bar=True)
    train_seconds = time.perf_counter() - start
    after, after_episodes = evaluate()

    table = Table(title=f"held-out prompts ({len(held_out)} x {config.eval_samples} samples)")
    for column in ("", "reward", "KL to initial LM (nats)", "distinct-2", "tokens"):
        table.add_column(column)
    for name, stats in (("before", before), ("after", after)):
        table.add_row(name, f"{stats['reward_mean']:+.3f} ± {stats['reward_std']:.3f}", f"{stats['kl_mean']:.2f}",
                      f"{stats['distinct_2']:.2f}", f"{stats['length_mean']:.1f}")
    console.print(table)
    samples = Table(title="samples (first per prompt)")
    for column in ("prompt", "before", "after"):
        samples.add_column(column)
    for i in range(0, min(len(before_episodes), 4 * config.eval_samples), config.eval_samples):
        b, a = before_episodes[i], after_episodes[i]
        samples.add_row(b.prompt, f"{b.completion} [{b.reward:+.2f}]", f"{a.completion} [{a.reward:+.2f}]")
    console.print(samples)

    algorithm.save(run_dir / "model.zip")
    policy.save_pretrained(run_dir / "lm")
    summary = {"config": asdict(config), "train_seconds": train_seconds, "before": before, "after": after,
               "samples_before": episodes_to_dicts(before_episodes), "samples_after": episodes_to_dicts(after_episodes)}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    console.print(f"trained in {train_seconds:.0f} s; saved {run_dir}/model.zip (SB3), {run_dir}/lm (Hugging Face), "
                  f"{run_dir}/summary.json")
    return run_dir
