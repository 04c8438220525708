"""Compare RL algorithms on one task or on the task suite: curves (PNG), markdown tables, raw JSON.

One task (``lm-gym compare --env E``) writes ``curves.png``, ``results.md`` and ``results.json``. Several
(``--suite``, or ``--env`` repeated) write those per task under ``<env>/`` and, on top, ``suite.md`` /
``suite.json`` (every score also as a fraction of the task's held-out optimum, where it is known) and
``suite.png`` (one panel per task, with the initial LM and the optimum marked).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt
import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agents.runs.interrupts import StopRequest
from agents.runs.progress import LearningCurve, Observer, progress_lines
from agents.runs.samples import sample_episodes, summarize
from agents.runs.train import RLLIB_ONLY, TrainConfig, make_eval_env, make_trainer, new_run_dir, resolve_algorithm
from agents.runs.watchdog import StallWatchdog
from lm_gym.task_suite import SuiteTask, suite_task


def run_one(config: TrainConfig, every: int, report: Observer | None = None, initial: bool = False) -> dict:
    """Train one (algorithm, seed) on either backend and evaluate it on held-out prompts (``initial``: also
    before training). A run whose env steps stop for ``config.stall_timeout`` ends the comparison with
    :class:`agents.runs.watchdog.TrainingStalled`, as ``lm-gym train`` does (a comparison writes no checkpoints)."""
    eval_env, train_prompts, held_out = make_eval_env(config)
    trainer = make_trainer(config, eval_env, train_prompts, run_dir=None)

    def evaluate() -> dict:
        torch.manual_seed(config.seed)
        return summarize(sample_episodes(trainer.policy, eval_env, held_out, config.eval_samples,
                                         reference=trainer.reference))

    try:
        result = {"initial": evaluate()} if initial else {}
        curve = LearningCurve(every)
        start = time.perf_counter()
        with StopRequest() as stop, StallWatchdog(config.stall_timeout, trainer.waiting_for, stop.stall,
                                                  trainer.num_timesteps) as watchdog:
            trainer.learn(config.steps, [curve] if report is None else [curve, report], watchdog=watchdog)
        seconds = time.perf_counter() - start
        final = evaluate()
    finally:
        trainer.close()
    return {**result, "curve": curve.points, "final": final, "train_seconds": seconds}


def run_configs(algos: Sequence[str], env: str, options: dict[str, Any], budget_scale: float = 1.0
                ) -> dict[str, TrainConfig]:
    """The config of each algorithm on ``env``: ``options`` (TrainConfig fields) over the task's own defaults;
    ``budget_scale`` multiplies the task's step budget (rounded to whole rollouts of ``n_envs``)."""
    if budget_scale != 1.0 and options.get("steps") is not None:
        raise ValueError("give steps or budget_scale, not both: budget_scale scales each task's own budget.")
    if budget_scale <= 0:
        raise ValueError(f"budget_scale={budget_scale}: must be positive.")
    configs = {}
    for name in algos:
        try:
            backend, algo = resolve_algorithm(name)
        except ValueError as error:
            raise ValueError(f"--algos: {error}") from error
        sb3_only = {key: None for key in RLLIB_ONLY} if backend == "sb3" else {}  # Ray settings: RLlib runs only
        configs[name] = config = TrainConfig(**{**options, "env": env, "backend": backend, "algo": algo, **sb3_only})
        config.validate()
        if budget_scale != 1.0:
            config.steps = max(config.n_envs, round(config.steps * budget_scale / config.n_envs) * config.n_envs)
    return configs


def compare(algos: Sequence[str], seeds: int, envs: Sequence[str] = ("TextGen-v0",), every: int | None = None,
            console: Console | None = None, budget_scale: float = 1.0, **options: Any) -> Path:
    """Train every algorithm with ``seeds`` seeds on every task of ``envs``; write the tables, curves and JSON.

    ``algos`` names SB3's algorithms as they are and RLlib's as ``rllib_ppo``, ``appo``, ``impala``
    (:func:`agents.runs.train.resolve_algorithm`). ``options`` are TrainConfig fields shared by every run (e.g.
    ``steps``, ``n_envs``, Ray settings for the RLlib runs); what they leave unset comes from each task (its LM,
    reward, tuned hyperparameters), so every algorithm gets the same budget on a task; ``budget_scale`` scales
    each task's budget (``steps`` left unset).
    """
    console = console or Console()
    if not envs:
        raise ValueError("envs: name at least one task (--env, or --suite).")
    plans = {env: run_configs(algos, env, options, budget_scale) for env in envs}  # every config checked before any run
    first = next(iter(plans[envs[0]].values()))
    out = new_run_dir(first.out, "compare")
    suite = len(envs) > 1
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    tasks: dict[str, dict] = {}
    with Progress(*columns, console=console) as progress:
        runs = progress.add_task("runs", total=len(envs) * len(algos) * seeds)
        for env, configs in plans.items():
            results: dict[str, list[dict]] = {}
            initial = None
            for name, config in configs.items():
                results[name] = []
                for seed in range(seeds):
                    label = f"{env} {name} seed {seed}" if suite else f"{name} seed {seed}"
                    bar = progress.add_task(label, total=config.steps)
                    report = lambda n, returns, t=bar, total=config.steps: progress.update(  # noqa: E731
                        t, completed=min(n, total))
                    if not console.is_terminal:  # no live bars to see: plain lines as the run goes
                        report = progress_lines(console, config.steps, description=label)
                    result = run_one(dataclasses.replace(config, seed=seed), every or max(config.steps // 20, config.n_envs),
                                     report, initial=suite and initial is None)
                    initial = result.pop("initial", initial)
                    results[name].append(result)
                    progress.update(bar, completed=config.steps, visible=False)
                    progress.advance(runs)
            task_out = out / env if suite else out
            task_out.mkdir(exist_ok=True)
            tasks[env] = write_task_results(task_out, env, next(iter(configs.values())), seeds, results, console)
            tasks[env]["initial"] = initial
    if suite:
        write_suite(out, tasks, seeds, console)
    return out


def write_task_results(out: Path, env: str, config: TrainConfig, seeds: int, results: dict[str, list[dict]],
                       console: Console) -> dict:
    """One task's results.json, results.md and curves.png; returns what the suite table needs."""
    task = suite_task(env)
    (out / "results.json").write_text(json.dumps({
        "config": dataclasses.asdict(config), "seeds": seeds, "results": results,
        "optimum": task.optimum if task else None, "metric": task.metric if task else None}, indent=2))
    table = markdown_table(results, task)
    (out / "results.md").write_text(table + "\n")
    reward = f"reward={config.reward!r}, " if config.reward else ""
    plot_curves(results, out / "curves.png", title=f"{env}, {reward}{seeds} seeds")
    console.print(f"[bold]{env}[/bold]")
    console.print(table)
    console.print(f"wrote {out}/curves.png, {out}/results.md, {out}/results.json")
    return {"task": task, "results": results, "steps": config.steps}


def _mean_std(values: Sequence[float]) -> str:
    return f"{np.mean(values):+.3f} ± {np.std(values):.3f}"


def markdown_table(results: dict[str, list[dict]], task: SuiteTask | None = None) -> str:
    """Final held-out metrics per algorithm, mean ± std over seeds (and as a fraction of the optimum)."""
    optimum = task is not None
    lines = ["| algorithm | reward (held-out) |" + (" of optimum |" if optimum else "")
             + " KL to initial LM (nats) | distinct-2 | train time (s) |",
             "|---|---|" + ("---|" if optimum else "") + "---|---|---|"]
    for algo, runs in results.items():
        final = [r["final"] for r in runs]
        rewards = [f["reward_mean"] for f in final]
        fraction = f" {np.mean(rewards) / task.optimum:.2f} |" if optimum else ""
        lines.append(f"| {algo} | {_mean_std(rewards)} |{fraction} {_mean_std([f['kl_mean'] for f in final])} | "
                     f"{np.mean([f['distinct_2'] for f in final]):.3f} | "
                     f"{np.mean([r['train_seconds'] for r in runs]):.0f} |")
    if optimum:
        lines.append(f"| optimum ({task.solver}) | {task.optimum:+.3f} | 1.00 | | | |")
    return "\n".join(lines)


def suite_table(tasks: dict[str, dict], seeds: int) -> str:
    """One row per algorithm, one column per task: held-out score mean ± std over seeds (fraction of the optimum)."""
    def cell(score: float, spread: float | None, task: SuiteTask | None) -> str:
        fraction = f" ({score / task.optimum:.2f})" if task is not None else ""
        return f"{score:.3f}" + (f" ± {spread:.3f}" if spread is not None else "") + fraction

    envs = list(tasks)
    algos = list(next(iter(tasks.values()))["results"])
    lines = ["| | " + " | ".join(envs) + " |", "|---|" + "---|" * len(envs),
             "| metric | " + " | ".join(t["task"].metric if t["task"] else "reward" for t in tasks.values()) + " |",
             "| initial LM | " + " | ".join(cell(t["initial"]["reward_mean"], None, t["task"]) for t in tasks.values())
             + " |"]
    for algo in algos:
        cells = []
        for t in tasks.values():
            rewards = [r["final"]["reward_mean"] for r in t["results"][algo]]
            cells.append(cell(float(np.mean(rewards)), float(np.std(rewards)), t["task"]))
        lines.append(f"| {algo} | " + " | ".join(cells) + " |")
    lines.append("| optimum | " + " | ".join(f"{t['task'].optimum:.3f} ({t['task'].solver})" if t["task"] else "-"
                                           for t in tasks.values()) + " |")
    lines.append("| steps per run | " + " | ".join(str(t["steps"]) for t in tasks.values()) + " |")
    return "\n".join(lines) + f"\n\nHeld-out score, mean ± std over {seeds} seeds (fraction of the optimum)."


def write_suite(out: Path, tasks: dict[str, dict], seeds: int, console: Console) -> None:
    table = suite_table(tasks, seeds)
    (out / "suite.md").write_text(table + "\n")
    (out / "suite.json").write_text(json.dumps({
        env: {"initial": t["initial"]["reward_mean"], "optimum": t["task"].optimum if t["task"] else None,
              "steps": t["steps"],
              "final": {algo: [r["final"]["reward_mean"] for r in runs] for algo, runs in t["results"].items()}}
        for env, t in tasks.items()}, indent=2))
    plot_suite(tasks, out / "suite.png", seeds)
    console.print(table)
    console.print(f"wrote {out}/suite.md, {out}/suite.json, {out}/suite.png")


def _curve_band(runs: list[dict], column: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Learning curves of several seeds on one grid of ``column`` (0: env steps, 1: seconds): grid, values."""
    curves = [np.array(r["curve"]) for r in runs if r["curve"]]
    if not curves:
        return None
    # Up to the seeds' mean end (the table's mean time): a seed that ended sooner holds its last value.
    grid = np.linspace(min(c[0, column] for c in curves), np.mean([c[-1, column] for c in curves]), 50)
    return grid, np.stack([np.interp(grid, c[:, column], c[:, 2]) for c in curves])


def plot_curves(results: dict[str, list[dict]], path: Path, title: str) -> None:
    """Mean training return (line) and min-max over seeds (band) against env steps and wall-clock time, and each
    seed's held-out score against its KL to the initial LM (what the return cost)."""
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.5))
    axes[1].sharey(axes[0])
    for algo, runs in results.items():
        color = None
        for axis, column in zip(axes, (0, 1)):
            band = _curve_band(runs, column)
            if band is None:
                continue
            grid, values = band
            (line,) = axis.plot(grid, values.mean(0), label=algo, color=color)
            color = line.get_color()
            axis.fill_between(grid, values.min(0), values.max(0), color=color, alpha=0.2)
        kl = [r["final"]["kl_mean"] for r in runs]
        score = [r["final"]["reward_mean"] for r in runs]
        points = axes[2].scatter(kl, score, color=color, alpha=0.5, label=algo)
        axes[2].scatter([np.mean(kl)], [np.mean(score)], color=points.get_facecolor()[0], marker="X", s=90)
    axes[0].set(xlabel="env steps (generated tokens)", ylabel="episode reward (training)", title=title)
    axes[1].set(xlabel="wall-clock seconds", title="same runs against time")
    axes[2].set(xlabel="KL to the initial LM (nats per episode)", ylabel="held-out score",
                title="held-out, after training (x: mean over seeds)")
    for axis in axes:
        axis.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_suite(tasks: dict[str, dict], path: Path, seeds: int) -> None:
    """One panel per task: each algorithm's training return against env steps (mean, min-max band over seeds),
    with the initial LM's and the optimum's held-out scores as dashed lines."""
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 4), squeeze=False)
    for axis, (env, t) in zip(axes[0], tasks.items()):
        for algo, runs in t["results"].items():
            band = _curve_band(runs, 0)
            if band is not None:
                (line,) = axis.plot(band[0], band[1].mean(0), label=algo)
                axis.fill_between(band[0], band[1].min(0), band[1].max(0), color=line.get_color(), alpha=0.15)
        axis.axhline(t["initial"]["reward_mean"], color="grey", linestyle=":", label="initial LM (held-out)")
        if t["task"] is not None:
            axis.axhline(t["task"].optimum, color="black", linestyle="--", label="optimum (held-out)")
        axis.set(title=env, xlabel="env steps", ylabel="episode return (training)")
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"lm-gym task suite, {seeds} seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
