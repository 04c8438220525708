"""Compare RL algorithms on one TextGen-v0 task: learning curves (PNG), a markdown table and raw JSON."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt
import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from stable_baselines3.common.callbacks import BaseCallback

from agents.sb3.algorithms import ALGORITHMS, make_algorithm
from agents.runs.samples import sample_episodes, summarize
from agents.sb3.kl import KLPenaltyCallback
from agents.runs.train import TrainConfig, make_envs, new_run_dir


class LearningCurveCallback(BaseCallback):
    """Every ``every`` env steps, records (steps, seconds, mean return of the episodes finished since)."""

    def __init__(self, every: int, report=None):
        super().__init__()
        self.every, self.report = every, report  # report(num_timesteps): progress display
        self.points: list[tuple[int, float, float]] = []
        self._returns: list[float] = []

    def _on_training_start(self) -> None:
        self.start, self.next_point = time.perf_counter(), self.every

    def _on_step(self) -> bool:
        # VecMonitor puts {"r", "l", "t"} into the info of each env whose episode just ended.
        self._returns.extend(info["episode"]["r"] for info in self.locals["infos"] if "episode" in info)
        if self.num_timesteps >= self.next_point and self._returns:
            self.points.append((self.num_timesteps, time.perf_counter() - self.start, float(np.mean(self._returns))))
            self._returns, self.next_point = [], self.num_timesteps + self.every
        if self.report is not None:
            self.report(self.num_timesteps)
        return True


def run_one(config: TrainConfig, every: int, report=None) -> dict:
    """Train one (algorithm, seed) and evaluate it on held-out prompts."""
    vec_env, eval_env, held_out = make_envs(config)
    algorithm = make_algorithm(config.algo, vec_env, model=config.model, seed=config.seed, device=config.device,
                               **config.algorithm_kwargs())
    reference = algorithm.policy.load_reference_model()
    curve = LearningCurveCallback(every, report)
    callbacks = [curve]
    if ALGORITHMS[config.algo].on_policy and config.kl_coef > 0:
        kl = KLPenaltyCallback(coef=config.kl_coef, target=config.kl_target)
        kl.reference = reference
        callbacks.append(kl)
    start = time.perf_counter()
    algorithm.learn(total_timesteps=config.steps, callback=callbacks)
    seconds = time.perf_counter() - start
    torch.manual_seed(config.seed)
    final = summarize(sample_episodes(algorithm.policy, eval_env, held_out, config.eval_samples, reference=reference))
    return {"curve": curve.points, "final": final, "train_seconds": seconds}


def compare(algos: Sequence[str], seeds: int, base: TrainConfig, every: int | None = None,
            console: Console | None = None) -> Path:
    """Train every algorithm with ``seeds`` seeds on ``base``'s task; write curves.png, results.md, results.json."""
    console = console or Console()
    unknown = [a for a in algos if a not in ALGORITHMS]
    if unknown:
        raise ValueError(f"--algos: unknown {unknown}; choose from {sorted(ALGORITHMS)}.")
    every = every or max(base.steps // 20, base.n_envs)
    out = new_run_dir(base.out, "compare")
    results: dict[str, list[dict]] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        runs = progress.add_task("runs", total=len(algos) * seeds)
        for algo in algos:
            results[algo] = []
            for seed in range(seeds):
                task = progress.add_task(f"{algo} seed {seed}", total=base.steps)
                config = dataclasses.replace(base, algo=algo, seed=seed)
                results[algo].append(run_one(config, every, lambda n, t=task: progress.update(t, completed=n)))
                progress.update(task, completed=base.steps, visible=False)
                progress.advance(runs)
    (out / "results.json").write_text(json.dumps({"config": dataclasses.asdict(base), "seeds": seeds, "every": every,
                                                  "results": results}, indent=2))
    table = markdown_table(results)
    (out / "results.md").write_text(table + "\n")
    plot_curves(results, out / "curves.png", title=f"TextGen-v0, reward={base.reward!r}, {seeds} seeds")
    console.print(table)
    console.print(f"wrote {out}/curves.png, {out}/results.md, {out}/results.json")
    return out


def _mean_std(values: Sequence[float]) -> str:
    return f"{np.mean(values):+.3f} ± {np.std(values):.3f}"


def markdown_table(results: dict[str, list[dict]]) -> str:
    """Final held-out metrics per algorithm, mean ± std over seeds."""
    lines = ["| algorithm | reward (held-out) | KL to initial LM (nats) | distinct-2 | train time (s) |",
             "|---|---|---|---|---|"]
    for algo, runs in results.items():
        final = [r["final"] for r in runs]
        lines.append(f"| {algo} | {_mean_std([f['reward_mean'] for f in final])} | "
                     f"{_mean_std([f['kl_mean'] for f in final])} | {np.mean([f['distinct_2'] for f in final]):.3f} | "
                     f"{np.mean([r['train_seconds'] for r in runs]):.0f} |")
    return "\n".join(lines)


def plot_curves(results: dict[str, list[dict]], path: Path, title: str) -> None:
    """Mean return (line) and min-max over seeds (band), against env steps and against wall-clock time."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for algo, runs in results.items():
        curves = [np.array(r["curve"]) for r in runs if r["curve"]]
        if not curves:
            continue
        for axis, column in zip(axes, (0, 1)):
            end = min(c[-1, column] for c in curves)
            grid = np.linspace(min(c[0, column] for c in curves), end, 50)
            values = np.stack([np.interp(grid, c[:, column], c[:, 2]) for c in curves])
            (line,) = axis.plot(grid, values.mean(0), label=algo)
            axis.fill_between(grid, values.min(0), values.max(0), color=line.get_color(), alpha=0.2)
    axes[0].set(xlabel="env steps (generated tokens)", ylabel="episode reward (training)", title=title)
    axes[1].set(xlabel="wall-clock seconds", title="same runs against time")
    for axis in axes:
        axis.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
