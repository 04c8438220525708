"""One training run, on either backend: config, run directory, before/after held-out report, exports.

A run directory holds ``config.yaml`` (the resolved config), ``before.json``, ``checkpoints/`` and, once
finished, the backend's own save (``model.zip`` for SB3, ``algorithm/`` for RLlib), ``lm/`` (Hugging Face)
and ``summary.json``; SB3 runs also ``tensorboard/``.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from stable_baselines3.common.callbacks import BaseCallback
from transformers import GenerationConfig

from agents.runs.checkpoints import CheckpointError, checkpoint_dirs
from agents.runs.held_out_log import log_held_out
from agents.runs.model_card import write_model_card
from agents.runs.errors import RunSaveError
from agents.runs.interrupts import DISK_FULL, StopRequest, TrainingInterrupted
from agents.runs.config import BACKENDS, RLLIB_ONLY, TEXT_ENV_PREFIXES, TrainConfig, read_yaml, resolve_algorithm
from agents.runs.tasks import TASKS, Task, task_of
from agents.runs.progress import episodes_bar, progress_bar
from agents.runs.ray_auth import use_token_auth_if_given
from agents.runs.watchdog import StallWatchdog, TrainingStalled
from agents.runs.samples import episodes_to_dicts, sample_episodes, summarize
from agents.runs.sb3_backend import SB3Trainer
from lm_gym.env import TextGenEnv
from lm_gym.instances import held_out_overlap
from lm_gym.multiturn import MultiTurnEnv
from lm_gym.prompts import Prompt
from lm_gym.task_suite import SuiteTask

__all__ = ["BACKENDS", "RLLIB_ONLY", "TASKS", "Task", "TrainConfig", "make_eval_env", "make_trainer", "new_run_dir",
           "read_yaml", "resolve_algorithm", "task_of", "train"]

def fraction_of_optimum(score: float, task: SuiteTask | None) -> str:
    """``score / optimum`` as text ("-" for a task without a known optimum)."""
    return f"{score / task.optimum:.2f}" if task is not None else "-"


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


def make_eval_env(config: TrainConfig) -> tuple[TextGenEnv | MultiTurnEnv, list[Prompt] | None, list[Prompt | dict]]:
    """The single env that samples held-out completions, the training prompts and the held-out prompts.

    It knows both prompt sets, so its observation window (which the training envs reuse) fits both. For a
    multi-turn task: the env of the held-out split, no training prompts (the training envs deal their own task
    instances) and the held-out instances as reset options.
    """
    if config.task.multi_turn:
        return MultiTurnEnv(**config.env_kwargs("test")), None, config.task.held_out_instances()
    train_prompts, held_out = config.prompt_sets()
    eval_env = TextGenEnv(**{**config.env_kwargs(), "prompts": train_prompts + held_out})
    return eval_env, train_prompts, held_out


def make_trainer(config: TrainConfig, eval_env: TextGenEnv | MultiTurnEnv, train_prompts: list[Prompt] | None,
                 run_dir: Path | None,
                 resume_from: Path | None = None):
    """The backend's trainer: :class:`agents.runs.sb3_backend.SB3Trainer` or
    :class:`agents.runs.rllib_backend.RLlibTrainer` (imported only then: it needs lm-gym[rllib])."""
    if config.backend == "rllib":
        if config.ray_address is not None:
            use_token_auth_if_given()  # before Ray is imported, which reads the mode once
        try:
            from agents.runs.rllib_backend import RLlibTrainer
        except ImportError as error:
            raise ImportError(f"backend='rllib' needs Ray RLlib: pip install 'lm-gym[rllib]' ({error})") from error
        return RLlibTrainer(config, eval_env, train_prompts, run_dir, resume_from)
    return SB3Trainer(config, eval_env, train_prompts, run_dir, resume_from)


def train(config: TrainConfig | None = None, resume: str | Path | None = None, console: Console | None = None,
          callbacks: list[BaseCallback] = ()) -> Path:
    """Train (or, with ``resume=RUN``, continue RUN from its last checkpoint), save, report; returns the run dir.

    ``callbacks`` are extra SB3 callbacks, run alongside lm-gym's own (SB3 backend only). SIGTERM or SIGINT while
    training writes a checkpoint and raises :class:`TrainingInterrupted`; a failed save raises
    :class:`RunSaveError` naming the last intact checkpoint. A new run that fails before training starts leaves
    no directory behind.
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
    if callbacks and config.backend != "sb3":
        raise ValueError("callbacks= are SB3 callbacks; RLlib runs take RLlib callbacks in their AlgorithmConfig.")
    if resume is None:
        run_dir = new_run_dir(config.out, config.run_name())
    with StopRequest() as stop:
        try:
            if resume is None:
                config.to_yaml(run_dir / "config.yaml")
            trainer, evaluate, before = _start(config, run_dir, console, checkpoints[-1] if resume else None)
        except BaseException:
            if resume is None:  # nothing trained yet: leave no empty run behind
                shutil.rmtree(run_dir, ignore_errors=True)
            raise
        try:
            start = time.perf_counter()
            stop.deferring = True
            with StallWatchdog(config.stall_timeout, trainer.waiting_for, stop.stall, trainer.num_timesteps) as watchdog, \
                    progress_bar(console, config.steps, trainer.num_timesteps) as observe:
                trainer.learn(config.steps, [observe], stop=stop, watchdog=watchdog,
                              **({"callbacks": callbacks} if callbacks else {}))
            stop.deferring = False
            train_seconds = time.perf_counter() - start
            _save_final(trainer, run_dir, config)
            after = evaluate()
        except TrainingInterrupted as interrupted:
            console.print(_interrupted_message(interrupted, run_dir))
            raise
        except TrainingStalled as stalled:  # SB3 stalls mid-rollout: the last periodic checkpoint is the way back
            saved = checkpoint_dirs(run_dir)
            if stalled.checkpoint is None and saved:
                raise stalled.with_checkpoint(saved[-1]) from None
            raise
        except OSError as error:
            if error.errno in DISK_FULL:
                raise RunSaveError(_save_failure(run_dir, error)) from error
            raise
        finally:
            trainer.close()
    task = config.suite_task
    summary = {"config": asdict(config), "train_seconds": train_seconds, "resumed_at": before.resumed_at,
               "before": before.stats, "after": after.stats,
               # The held-out optimum, on reward_mean's scale (None: the task has no known optimum).
               "optimum": task.optimum if task else None, "metric": task.metric if task else None,
               "samples_before": before.samples, "samples_after": after.samples,
               "held_out_overlap": before.overlap}
    if getattr(trainer, "cluster", None) is not None:  # RLlib: the Ray cluster and where each piece ran
        summary["cluster"] = trainer.cluster
    try:
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        write_model_card(run_dir, config, summary)
        if config.eval_samples:
            log_held_out(run_dir, before.stats, after.stats, after.samples, config.steps)
    except OSError as error:
        raise RunSaveError(_save_failure(run_dir, error, trained=True)) from error
    if config.eval_samples:
        print_report(console, before.stats, after.stats, before.samples, after.samples, before.prompts,
                     config.eval_samples, task)
    else:
        console.print("no held-out report: eval_samples=0.")
    saved = ", ".join(f"{run_dir}/{name}" for name in trainer.final_files)
    console.print(f"trained in {train_seconds:.0f} s; saved {saved} ({config.backend}), {run_dir}/lm (Hugging Face), "
                  f"{run_dir}/summary.json")
    return run_dir


@dataclass
class HeldOut:
    """A held-out evaluation (None everywhere with ``eval_samples=0``) and, for ``before``, the step it resumed at."""

    stats: dict | None
    samples: list[dict] | None
    prompts: int
    resumed_at: int | None = None
    overlap: dict | None = None  # a text env id's held-out instances that training deals too (lm_gym.instances)


def _start(config: TrainConfig, run_dir: Path, console: Console, resume_from: Path | None):
    """Build the trainer and measure (or, resuming, read back) the held-out score before training."""
    eval_env, train_prompts, held_out = make_eval_env(config)
    if config.prompts is not None and config.eval_prompts is None and config.eval_split is None \
            and config.eval_fraction is None:
        console.print("note: no held-out prompts given (eval_prompts, eval_split or eval_fraction); the report uses "
                      "the bundled held-out review openings.")
    trainer = make_trainer(config, eval_env, train_prompts, run_dir, resume_from)
    try:
        for note in trainer.notes:
            console.print(f"note: {note}")

        def evaluate() -> HeldOut:
            if not config.eval_samples:
                return HeldOut(None, None, len(held_out))
            torch.manual_seed(config.seed)
            with episodes_bar(console, len(held_out) * config.eval_samples, "held-out") as progress:
                episodes = sample_episodes(trainer.policy, eval_env, held_out, config.eval_samples,
                                           reference=trainer.reference, progress=progress)
            return HeldOut(summarize(episodes), episodes_to_dicts(episodes), len(held_out))

        overlap = None
        if config.env.startswith(TEXT_ENV_PREFIXES):  # a peer's game: do its held-out seeds hold anything out?
            overlap = held_out_overlap(eval_env, [instance["text_env_seed"] for instance in held_out])
            if overlap.seen_in_training:
                console.print(f"note: {overlap.message(config.env)}")
        done = trainer.num_timesteps
        console.print(f"[bold]lm-gym train[/bold]: {config.backend} {config.algo} on {config.env}, "
                      f"reward={config.reward!r}, model={config.model or 'bundled'}, {config.steps} steps on "
                      f"{trainer.device} -> {run_dir}" + (f" (resuming at step {done})" if resume_from else ""))
        if resume_from is None:
            before = evaluate()
            (run_dir / "before.json").write_text(json.dumps({"stats": before.stats, "samples": before.samples}))
        else:  # measured when the run started
            saved = json.loads((run_dir / "before.json").read_text())
            before = HeldOut(saved["stats"], saved["samples"], len(held_out), resumed_at=done or None)
        before.overlap = None if overlap is None else overlap.as_dict()
    except BaseException:
        trainer.close()
        raise
    return trainer, evaluate, before


def _save_final(trainer, run_dir: Path, config: TrainConfig) -> None:
    """The backend's save and the Hugging Face export, first thing after training: nothing later can lose them."""
    try:
        trainer.save(run_dir)
        trainer.policy.save_pretrained(run_dir / "lm")
        if not config.task.multi_turn:  # pipeline() then generates as many tokens as an episode has
            generation = GenerationConfig.from_pretrained(run_dir / "lm")
            generation.max_new_tokens = config.max_new_tokens
            generation.save_pretrained(run_dir / "lm")
    except OSError as error:
        raise RunSaveError(_save_failure(run_dir, error)) from error


def _save_failure(run_dir: Path, error: OSError, trained: bool = False) -> str:
    checkpoints = checkpoint_dirs(run_dir)
    intact = (f"the last intact checkpoint is {checkpoints[-1]} (lm-gym train --resume {run_dir} continues from it)"
              if checkpoints else "no checkpoint was written")
    what = "the run's summary" if trained else "the run"
    return (f"could not save {what} into {run_dir}: {error.strerror or error} "
            f"({error.filename or 'a file there'}); {intact}. Free some space and resume.")


def _interrupted_message(interrupted: TrainingInterrupted, run_dir: Path) -> str:
    if interrupted.step is None and (run_dir / "lm").is_dir():
        return (f"stopped by {interrupted} after training: {run_dir}/lm and the backend's save are written; the "
                "held-out report and summary.json are not (lm-gym evaluate RUN gives the report).")
    if interrupted.checkpoint is None:
        return f"stopped by {interrupted}: no checkpoint written (none due yet)."
    return (f"stopped by {interrupted}: checkpoint {interrupted.checkpoint}; continue with: "
            f"lm-gym train --resume {run_dir}")


def print_report(console: Console, before: dict, after: dict, before_samples: list[dict], after_samples: list[dict],
                 n_prompts: int, per_prompt: int, task: SuiteTask | None = None) -> None:
    """The before/after table on held-out prompts (or instances), with the task's optimum where it is known."""
    table = Table(title=f"held-out prompts ({n_prompts} x {per_prompt} samples)")
    for column in ("", "reward", "of optimum", "KL to initial LM (nats)", "distinct-2", "tokens"):
        table.add_column(column)
    for name, stats in (("before", before), ("after", after)):
        table.add_row(name, f"{stats['reward_mean']:+.3f} ± {stats['reward_std']:.3f}",
                      fraction_of_optimum(stats["reward_mean"], task), f"{stats['kl_mean']:.2f}",
                      f"{stats['distinct_2']:.2f}", f"{stats['length_mean']:.1f}")
    if task is not None:
        table.add_row("optimum", f"{task.optimum:+.3f}", "1.00", "", "", "")
    console.print(table)
    if task is not None:
        detail = f", {task.optimum_detail}" if task.optimum_detail else ""
        console.print(f"optimum ({task.metric}): {task.optimum:.3f} by {task.solver}{detail}")
    samples = Table(title="samples (first per prompt)")
    for column in ("prompt", "before", "after"):
        samples.add_column(column)
    for i in range(0, min(len(before_samples), 4 * per_prompt), per_prompt):
        b, a = before_samples[i], after_samples[i]
        samples.add_row(b["prompt"], f"{b['completion']} [{b['reward']:+.2f}]", f"{a['completion']} [{a['reward']:+.2f}]")
    console.print(samples)
