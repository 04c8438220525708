"""Compare RL algorithms on one task (TextGen-v0, TextGen-Arithmetic-v0): curves (PNG), markdown table, raw JSON."""

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

from agents.runs.progress import LearningCurve, Observer
from agents.runs.samples import sample_episodes, summarize
from agents.runs.train import RLLIB_ONLY, TrainConfig, make_eval_env, make_trainer, new_run_dir, resolve_algorithm


def run_one(config: TrainConfig, every: int, report: Observer | None = None) -> dict:
    """Train one (algorithm, seed) on either backend and evaluate it on held-out prompts."""
    eval_env, train_prompts, held_out = make_eval_env(config)
    trainer = make_trainer(config, eval_env, train_prompts, run_dir=None)
    try:
        curve = LearningCurve(every)
        start = time.perf_counter()
        trainer.learn(config.steps, [curve] if report is None else [curve, report])
        seconds = time.perf_counter() - start
        torch.manual_seed(config.seed)
        final = summarize(sample_episodes(trainer.policy, eval_env, held_out, config.eval_samples,
                                          reference=trainer.reference))
    finally:
        trainer.close()
    return {"curve": curve.points, "final": final, "train_seconds": seconds}


def compare(algos: Sequence[str], seeds: int, base: TrainConfig, every: int | None = None,
            console: Console | None = None) -> Path:
    """Train every algorithm with ``seeds`` seeds on ``base``'s task; write curves.png, results.md, results.json.

    ``algos`` names SB3's algorithms as they are and RLlib's as ``rllib_ppo``, ``appo``, ``impala``
    (:func:`agents.runs.train.resolve_algorithm`); RLlib runs use ``base``'s Ray settings.
    """
    console = console or Console()
    backends = {}
    for name in algos:
        try:
            backends[name] = resolve_algorithm(name)
        except ValueError as error:
            raise ValueError(f"--algos: {error}") from error
    sb3_only = {name: None for name in RLLIB_ONLY}  # the Ray settings concern the RLlib runs only
    configs = {name: dataclasses.replace(base, backend=backend, algo=algo, **(sb3_only if backend == "sb3" else {}))
               for name, (backend, algo) in backends.items()}
    for config in configs.values():
        config.validate()
    every = every or max(base.steps // 20, base.n_envs)
    out = new_run_dir(base.out, "compare")
    results: dict[str, list[dict]] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        runs = progress.add_task("runs", total=len(algos) * seeds)
        for name, config in configs.items():
            results[name] = []
            for seed in range(seeds):
                task = progress.add_task(f"{name} seed {seed}", total=base.steps)
                report = lambda n, returns, t=task: progress.update(t, completed=min(n, base.steps))  # noqa: E731
                results[name].append(run_one(dataclasses.replace(config, seed=seed), every, report))
                progress.update(task, completed=base.steps, visible=False)
                progress.advance(runs)
    (out / "results.json").write_text(json.dumps({"config": dataclasses.asdict(base), "seeds": seeds, "every": every,
                                                  "results": results}, indent=2))
    table = markdown_table(results)
    (out / "results.md").write_text(table + "\n")
    plot_curves(results, out / "curves.png", title=f"{base.env}, reward={base.reward!r}, {seeds} seeds")
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
