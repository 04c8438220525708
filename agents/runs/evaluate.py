"""Evaluating a finished (or checkpointed) run on held-out prompts: ``lm-gym evaluate RUN``."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from agents.sb3.algorithms import ALGORITHMS
from agents.runs.checkpoints import CheckpointError, checkpoint_dirs
from agents.runs.progress import episodes_bar
from agents.runs.samples import episodes_to_dicts, sample_episodes, summarize
from agents.runs.train import TrainConfig, fraction_of_optimum, make_eval_env
from lm_gym.prompts import PromptSource, load_prompts

COLUMNS = {"reward_mean": "reward", "kl_mean": "KL to initial LM", "perplexity": "perplexity (initial LM)",
           "distinct_1": "distinct-1", "distinct_2": "distinct-2", "eos_rate": "EOS rate", "length_mean": "tokens"}


def evaluate_run(run: str | Path, prompts: PromptSource = None, samples: int | None = None, seed: int = 0,
                 device: str = "auto", console: Console | None = None) -> dict:
    """Sample completions of held-out prompts from RUN's policy and report reward, KL to the initial LM,
    perplexity under it, distinct-1/2 and EOS rate. Writes ``evaluation-<time>.json`` into RUN.

    Uses the run's final save (SB3: ``model.zip``; RLlib: ``algorithm/``, read without starting Ray), or the
    latest checkpoint of an unfinished run; ``prompts`` defaults to the run's held-out prompts.
    """
    run = Path(run)
    if not (run / "config.yaml").exists():
        raise FileNotFoundError(f"{run} is not an lm-gym run directory (no config.yaml).")
    config = TrainConfig.from_yaml(run / "config.yaml")
    saved = "algorithm" if config.backend == "rllib" else "model.zip"
    weights = run / saved
    if not weights.exists():
        checkpoints = checkpoint_dirs(run)
        if not checkpoints:
            raise CheckpointError(f"{run} has neither {saved} nor a checkpoint to evaluate.")
        weights = checkpoints[-1] / saved
    eval_env, _, held_out = make_eval_env(config)
    texts = load_prompts(prompts) if prompts is not None else held_out
    if config.backend == "rllib":
        from agents.runs.rllib_backend import load_module

        policy = load_module(weights)
        if device != "auto":
            policy.to(device)
    else:
        policy = ALGORITHMS[config.algo].cls.load(weights, device=device).policy
    reference = policy.load_reference_model()
    torch.manual_seed(seed)
    samples = samples or config.eval_samples
    console = console or Console()
    with episodes_bar(console, len(texts) * samples, "evaluating") as progress:
        episodes = sample_episodes(policy, eval_env, texts, samples, reference=reference, progress=progress)
    stats = summarize(episodes)
    result = {"run": str(run), "weights": str(weights), "prompts": len(texts), "stats": stats,
              "samples": episodes_to_dicts(episodes)}
    table = Table("metric", "value",
                  title=f"{run.name}: {len(texts)} held-out prompts x {samples} samples")
    for key, name in COLUMNS.items():
        table.add_row(name, f"{stats[key]:.3f}")
    task = config.suite_task
    if task is not None and prompts is None:  # the optimum is the held-out instances'
        result.update(optimum=task.optimum, metric=task.metric)
        table.add_row(f"optimum ({task.metric}, {task.solver})", f"{task.optimum:.3f}")
        table.add_row("reward / optimum", fraction_of_optimum(stats["reward_mean"], task))
    out = run / f"evaluation-{datetime.now():%Y%m%d-%H%M%S-%f}.json"
    out.write_text(json.dumps(result, indent=2))
    console.print(table)
    console.print(f"wrote {out}")
    return result
