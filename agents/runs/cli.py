"""The ``lm-gym`` command line: ``train``, ``evaluate`` and ``compare`` (see ``lm-gym COMMAND --help``)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields

from transformers.utils import logging as hf_logging

from agents.runs.checkpoints import CheckpointError
from agents.runs.compare import compare
from agents.runs.evaluate import evaluate_run
from agents.runs.config import BACKENDS, LR_SCHEDULES, TASKS, ConfigTypeError, TrainConfig, read_yaml
from agents.runs.interrupts import RunSaveError, TrainingInterrupted
from agents.runs.watchdog import TrainingStalled
from agents.runs.train import train
from lm_gym.suite import suite

STALL_TIMEOUT_DEFAULT = "(default: max(120, 10x the longest wait so far), 600 before the first; 0: never)"
HELP = {
    "algo": "; ".join(f"{backend}: {', '.join(names)}" for backend, names in BACKENDS.items()),
    "backend": "sb3 (one process) or rllib (Ray RLlib: env runners, learners, clusters; pip install 'lm-gym[rllib]')",
    "num_env_runners": "rllib: env runner processes, each stepping --num-envs-per-env-runner envs (default 2)",
    "num_envs_per_env_runner": "rllib: envs per env runner (default: --n-envs spread over the runners)",
    "num_learners": "rllib: learner processes; 0 learns in this process (default 0)",
    "num_gpus_per_learner": "rllib: GPUs per learner (default 0)",
    "ray_address": "rllib: an existing Ray cluster, e.g. auto or ray://HEAD:10001 (default: a local Ray)",
    "env": f"the task: one of {', '.join(TASKS)}, or a text env id played turn by turn at the token level: gem:ID "
           "(e.g. gem:game:GuessTheNumber-v0-easy) or textarena:ID; it sets the defaults of --model, --reward, "
           "--max-new-tokens and the prompts (default: TextGen-v0)",
    "model": "Hugging Face name or local path of the causal LM (default: the env's bundled LM)",
    "reward": "reward name (see lm_gym.REWARDS; default: the env's)",
    "max_new_tokens": "token budget per completion (default: the env's, 16 or 4)",
    "group_size": "grpo, dr_grpo, rloo: completions sampled per prompt (default 4)",
    "reward_kwargs": 'reward arguments as JSON, e.g. \'{"target": "great"}\'',
    "prompts": "training prompts: a .txt/.jsonl file, or a Hugging Face dataset with --prompt-column",
    "eval_prompts": "held-out prompts for the before/after report (else --eval-split, --eval-fraction, bundled)",
    "eval_split": "held-out split of the --prompts dataset, e.g. 'test[:64]'",
    "eval_fraction": "hold out this fraction of --prompts for the report",
    "prompt_column": "text column of a Hugging Face dataset given as --prompts",
    "steps": "total env steps (generated tokens) to train on (default: the task's tuned budget, else 49152)",
    "kl_coef": "KL-to-initial-LM coefficient, the initial value when --kl-target is set (default: the task's, else "
               "0.05)",
    "kl_target": "adaptive KL: target KL per episode in nats",
    "lr_schedule": "constant, or linear: the learning rate decays linearly to 0 over the run (default: the task's, "
                   "else constant)",
    "recompute_log_probs": "true/false: recompute the rollout's log-probs with the update's forward before each "
                           "update (default: on under bfloat16 dtype/autocast_dtype, where the two paths differ)",
    "lora": 'train LoRA adapters only: peft LoraConfig arguments as JSON, e.g. \'{"r": 8}\'',
    "device": "auto, cpu or cuda",
    "checkpoint_every": "env steps between checkpoints (0: none)",
    "stall_timeout": "seconds without env steps before the run stops with a checkpoint and says what it waited for "
                     + STALL_TIMEOUT_DEFAULT,
    "out": "parent directory of the new run directory",
}
JSON_FIELDS = {"reward_kwargs", "lora", "env_options"}


def parse_bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes", "on"):
        return True
    if text.lower() in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean: use true or false.")


FIELD_TYPES = {"eval_fraction": float, "kl_target": float, "learning_rate": float, "n_steps": int, "batch_size": int,
               "n_epochs": int, "num_env_runners": int, "num_envs_per_env_runner": int, "num_learners": int,
               "num_gpus_per_learner": float, "reward": str, "max_new_tokens": int, "group_size": int,
               "recompute_log_probs": parse_bool, "stall_timeout": float}
CHOICES = {"algo": sorted({name for names in BACKENDS.values() for name in names}), "backend": list(BACKENDS),
           "lr_schedule": list(LR_SCHEDULES)}


def add_train_parser(commands) -> None:
    parser = commands.add_parser(
        "train", help="train a policy; with no arguments, PPO on the bundled offline sentiment task",
        description="Every option is also a key of a --config YAML file; flags given here override the file.",
    )
    parser.add_argument("--config", help="YAML file of TrainConfig fields (a run's config.yaml works)")
    parser.add_argument("--resume", metavar="RUN", help="continue RUN from its latest checkpoint")
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        default = getattr(defaults, f.name)
        flag = "--" + f.name.replace("_", "-")
        help_text = HELP.get(f.name, f.name.replace('_', ' '))
        help_text += "" if "default:" in help_text else f" (default: {default})"
        # SUPPRESS: only flags actually given reach the config, so they can override a --config file.
        if f.name in JSON_FIELDS:
            parser.add_argument(flag, type=json.loads, default=argparse.SUPPRESS, help=help_text)
        elif f.name in CHOICES:
            parser.add_argument(flag, choices=CHOICES[f.name], default=argparse.SUPPRESS, help=help_text)
        else:
            kind = type(default) if default is not None else FIELD_TYPES.get(f.name, str)
            parser.add_argument(flag, type=kind, default=argparse.SUPPRESS, help=help_text)


def add_evaluate_parser(commands) -> None:
    parser = commands.add_parser("evaluate", help="report reward, KL, perplexity, distinct-n and EOS rate of a run",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("run", help="a run directory written by lm-gym train")
    parser.add_argument("--prompts", default=None, help="prompt file (default: the run's held-out prompts)")
    parser.add_argument("--samples", type=int, default=None, help="completions per prompt (default: the run's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")


def add_compare_parser(commands) -> None:
    parser = commands.add_parser(
        "compare", help="train several algorithms x seeds on one task or the task suite; write curves, tables, JSON",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--algos", default="ppo,grpo,rloo,reinforce,a2c,maskable_ppo,trpo",
                        help=f"comma-separated; SB3: {', '.join(BACKENDS['sb3'])}; RLlib: rllib_ppo, appo, impala")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None,
                        help="env steps per run (default: each task's tuned budget, else 49152)")
    parser.add_argument("--budget-scale", type=float, default=1.0,
                        help="multiply each task's own step budget (instead of --steps), e.g. 0.25 for a quick suite")
    parser.add_argument("--every", type=int, default=None, help="env steps between learning-curve points")
    parser.add_argument("--env", action="append", default=None,
                        help=HELP["env"].split(";")[0] + "; repeat it to compare on several tasks (default: TextGen-v0)")
    parser.add_argument("--suite", action="store_true",
                        help=f"compare on every task of the suite (known optima): {', '.join(t.env_id for t in suite())}")
    parser.add_argument("--model", default=None, help=HELP["model"])
    parser.add_argument("--reward", default=None, help=HELP["reward"])
    parser.add_argument("--reward-kwargs", type=json.loads, default={}, help=HELP["reward_kwargs"])
    parser.add_argument("--max-new-tokens", type=int, default=None, help=HELP["max_new_tokens"])
    parser.add_argument("--env-kwargs", type=json.loads, default={},
                        help='any other TextGenEnv arguments as JSON, e.g. \'{"stop_tokens": []}\'')
    parser.add_argument("--kl-coef", type=float, default=None,
                        help="KL shaping for the on-policy algorithms (default: each task's, else 0.05)")
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="for every policy-gradient run (default: each task's, else each algorithm's)")
    parser.add_argument("--n-steps", type=int, default=None, help="env steps per env per rollout (default: as above)")
    parser.add_argument("--n-envs", type=int, default=8)
    parser.add_argument("--eval-samples", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--stall-timeout", type=float, default=None,
                        help="seconds without env steps before a stalled run ends the comparison, saying what it "
                             "waited for " + STALL_TIMEOUT_DEFAULT)
    parser.add_argument("--out", default="runs")
    for name in ("num_env_runners", "num_envs_per_env_runner", "ray_address"):
        parser.add_argument("--" + name.replace("_", "-"), type=FIELD_TYPES.get(name, str), default=None, help=HELP[name])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lm-gym", description="RL fine-tuning of causal LMs on TextGen-v0.")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error (by default: one line naming the fix)")
    commands = parser.add_subparsers(dest="command", required=True)
    add_train_parser(commands)
    add_evaluate_parser(commands)
    add_compare_parser(commands)
    return parser


# What a user can get wrong (a value, a path, a file, a missing extra, a full disk, an unreachable cluster): these
# print as one line and exit 2, like argparse's own errors. Anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, ConfigTypeError, FileNotFoundError, FileExistsError, NotADirectoryError, CheckpointError,
               ImportError, RunSaveError, ConnectionError)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except TrainingInterrupted as interrupted:  # the run printed where it stopped and how to resume
        if args.debug:
            raise
        raise SystemExit(interrupted.exit_code) from None
    except TrainingStalled as stalled:  # not the user's mistake (exit 2), but one line all the same
        if args.debug:
            raise
        print(f"lm-gym {args.command}: {stalled}", file=sys.stderr)
        raise SystemExit(1) from None
    except USER_ERRORS as error:
        if args.debug:
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"lm-gym {args.command}: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None


def run(args: argparse.Namespace) -> None:
    hf_logging.disable_progress_bar()  # one progress bar (training), not one per checkpoint load
    hf_logging.set_verbosity_error()
    if args.command == "train":
        given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
        if args.resume:
            if given or args.config:
                raise ValueError("--resume RUN takes no other options: the run's config.yaml holds them.")
            train(resume=args.resume)
            return
        values = read_yaml(args.config) if args.config else {}
        train(TrainConfig.from_dict({**values, **given}, source=args.config or "flags"))
    elif args.command == "evaluate":
        evaluate_run(args.run, prompts=args.prompts, samples=args.samples, seed=args.seed, device=args.device)
    elif args.command == "compare":
        if args.suite and args.env:
            raise ValueError("give --suite or --env, not both (--suite runs every suite task).")
        envs = [task.env_id for task in suite()] if args.suite else args.env or ["TextGen-v0"]
        options = {name: getattr(args, name) for name in (
            "model", "reward", "reward_kwargs", "max_new_tokens", "steps", "n_envs", "kl_coef", "learning_rate",
            "n_steps", "device", "stall_timeout",
            "eval_samples", "out", "num_env_runners", "num_envs_per_env_runner", "ray_address")}
        compare([a.strip() for a in args.algos.split(",") if a.strip()], args.seeds, envs, every=args.every,
                budget_scale=args.budget_scale, env_options=args.env_kwargs, **options)


if __name__ == "__main__":
    main()
