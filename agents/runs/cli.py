"""The ``lm-gym`` command line: ``train``, ``evaluate`` and ``compare`` (see ``lm-gym COMMAND --help``).

Building the parser imports nothing heavy (no torch, SB3 or transformers), so ``--help`` and argument errors answer
at once; the commands import what they run.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import MISSING, fields

from agents.runs.config import BACKENDS, LR_SCHEDULES, TASK_IDS, ConfigTypeError, TrainConfig, read_yaml
from agents.runs.errors import CheckpointError, RunSaveError
from agents.runs.interrupts import TrainingInterrupted
from agents.runs.watchdog import TrainingStalled

# Where a default comes from, in the words the help uses.
TASKS_OR = "the task's tuned value (agents.runs.tasks.TASKS), else"
ALGORITHMS_OWN = "the algorithm's (agents.sb3.ALGORITHMS; config.yaml records what the run used)"
STALL_TIMEOUT_DEFAULT = "(default: max(120, 10x the longest wait so far), 600 before the first; 0: never)"
# Every TrainConfig field's help: what it is, its unit, and where its default comes from (a test checks each one).
HELP = {
    "algo": "the algorithm; " + "; ".join(f"{backend}: {', '.join(names)}" for backend, names in BACKENDS.items())
            + " (default: ppo)",
    "env": f"the task: one of {', '.join(TASK_IDS)}, or a text env id played turn by turn at the token level: gem:ID "
           "(e.g. gem:game:GuessTheNumber-v0-easy) or textarena:ID; it sets the defaults of --model, --reward, "
           "--max-new-tokens, the prompts and the hyperparameters marked \"the task's\" (default: TextGen-v0)",
    "model": "Hugging Face name or local path of the causal LM (default: the env's bundled LM)",
    "reward": "reward name, see lm_gym.REWARDS (default: the env's: sentiment; exact_match for "
              "TextGen-Arithmetic-v0; multi-turn tasks: their text env's)",
    "reward_kwargs": 'reward arguments as JSON, e.g. \'{"target": "great"}\' (default: none)',
    "prompts": "training prompts: a .txt/.jsonl file, or a Hugging Face dataset with --prompt-column (default: the "
               "env's bundled prompts)",
    "eval_prompts": "held-out prompts for the before/after report (default: --eval-split, else --eval-fraction, else "
                    "the env's bundled held-out set)",
    "prompt_column": "text column of a Hugging Face dataset given as --prompts (default: none: --prompts is a file)",
    "references_column": "column of reference answers in that dataset, for rewards that compare (default: none)",
    "split": "split of the --prompts dataset to train on (default: train)",
    "eval_split": "held-out split of the --prompts dataset, e.g. 'test[:64]' (default: none)",
    "eval_fraction": "hold out this fraction of --prompts for the report, e.g. 0.1 (default: none)",
    "max_new_tokens": "token budget per completion, in tokens (default: the env's: 16; 4 for TextGen-Arithmetic-v0)",
    "steps": f"env steps to train on, in tokens generated over all envs (default: {TASKS_OR} 49152)",
    "n_envs": "envs stepped together; each LM call in a rollout carries one row per env (default: 8)",
    "learning_rate": f"Adam's learning rate (default: {TASKS_OR} {ALGORITHMS_OWN})",
    "lr_schedule": f"constant, or linear: the learning rate decays linearly to 0 over the run (default: {TASKS_OR} "
                   "constant)",
    "n_steps": f"rollout length, in env steps (tokens) per env; on-policy algorithms (default: {TASKS_OR} "
               f"{ALGORITHMS_OWN})",
    "batch_size": f"minibatch size, in env steps (tokens; whole episodes per minibatch) (default: {TASKS_OR} "
                  f"{ALGORITHMS_OWN})",
    "n_epochs": f"passes over each rollout; PPO-style algorithms (default: {TASKS_OR} {ALGORITHMS_OWN})",
    "group_size": "completions sampled per prompt, for grpo, dr_grpo and rloo (default: the algorithm's, 4)",
    "kl_coef": f"KL-to-initial-LM coefficient, per nat of KL per token; the initial value when --kl-target is set "
               f"(default: {TASKS_OR} 0.05)",
    "kl_target": "adaptive KL: target KL per episode, in nats (default: none, the coefficient stays fixed)",
    "lora": 'train LoRA adapters only: peft LoraConfig arguments as JSON, e.g. \'{"r": 8}\' (default: none, full '
            "fine-tuning)",
    "dtype": "the LM's weights' dtype, e.g. bfloat16 (default: the checkpoint's, float32 for the bundled LMs)",
    "autocast_dtype": "run the LM under torch.autocast in this dtype, e.g. bfloat16; the action distribution stays "
                      "float32 (default: none)",
    "recompute_log_probs": "true/false: recompute the rollout's log-probs with the update's forward before each "
                           "update (default: on under a bfloat16 dtype/autocast_dtype, where the two paths differ)",
    "seed": "random seed of the envs, the LM's sampling and the update (default: 0)",
    "device": "auto, cpu, cuda or cuda:N (default: auto: a GPU when there is one)",
    "eval_samples": "completions sampled per held-out prompt (or instance), before and after training; 0: no report "
                    "(default: 8)",
    "checkpoint_every": "env steps between checkpoints; 0: none (default: 8192)",
    "keep_checkpoints": "checkpoints kept: the newest N, older ones deleted once a newer one is whole; 0: keep all. "
                        "Each holds the LM's weights and Adam's two moments (~12 bytes per parameter: 7 MB for the "
                        "bundled 0.6M-parameter LMs, 1.5 GB for a 124M GPT-2) and the envs' episodes (default: 3)",
    "stall_timeout": "seconds without env steps before the run stops with a checkpoint and says what it waited for "
                     + STALL_TIMEOUT_DEFAULT,
    "log_samples": "completions logged as text to TensorBoard per rollout (default: 4)",
    "out": "parent directory of the new run directory (default: runs)",
    "env_options": 'any other env arguments as JSON, e.g. \'{"stop_tokens": []}\' or, multi-turn, '
                   '\'{"max_turns": 4}\' (default: none)',
    "backend": "sb3 (one process) or rllib (Ray RLlib: env runners, learners, clusters; pip install "
               "'lm-gym[rllib]') (default: sb3)",
    "num_env_runners": "rllib: env runner processes, each stepping --num-envs-per-env-runner envs; 0: the driver "
                       "samples, PPO only (default: 2)",
    "num_envs_per_env_runner": "rllib: envs per env runner (default: --n-envs spread over the runners)",
    "num_learners": "rllib: learner processes; 0 learns in the driver process (default: 0)",
    "num_gpus_per_learner": "rllib: GPUs per learner, fractions allowed (default: 0)",
    "ray_address": "rllib: an existing Ray cluster, e.g. auto or ray://HEAD:10001 (default: a local Ray started "
                   "for the run)",
}
JSON_FIELDS = {"reward_kwargs", "lora", "env_options"}


def parse_bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes", "on"):
        return True
    if text.lower() in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean: use true or false.")


FIELD_TYPES = {"eval_fraction": float, "kl_target": float, "learning_rate": float, "steps": int, "n_steps": int,
               "batch_size": int, "kl_coef": float,
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
    parser.add_argument("--config", help="YAML file of TrainConfig fields; a run's config.yaml works (default: none)")
    parser.add_argument("--resume", metavar="RUN", help="continue RUN from its latest checkpoint (default: a new run)")
    for f in fields(TrainConfig):
        default = f.default if f.default is not MISSING else f.default_factory()
        flag = "--" + f.name.replace("_", "-")
        # SUPPRESS: only flags actually given reach the config, so they can override a --config file.
        if f.name in JSON_FIELDS:
            parser.add_argument(flag, type=json.loads, default=argparse.SUPPRESS, help=HELP[f.name])
        elif f.name in CHOICES:
            parser.add_argument(flag, choices=CHOICES[f.name], default=argparse.SUPPRESS, help=HELP[f.name])
        else:
            kind = type(default) if default is not None else FIELD_TYPES.get(f.name, str)
            parser.add_argument(flag, type=kind, default=argparse.SUPPRESS, help=HELP[f.name])


def add_evaluate_parser(commands) -> None:
    parser = commands.add_parser("evaluate", help="report reward, KL, perplexity, distinct-n and EOS rate of a run")
    parser.add_argument("run", help="a run directory written by lm-gym train")
    parser.add_argument("--prompts", default=None, help="prompt file (default: the run's held-out prompts)")
    parser.add_argument("--samples", type=int, default=None,
                        help="completions sampled per prompt (default: the run's --eval-samples)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampling (default: 0)")
    parser.add_argument("--device", default="auto", help=HELP["device"])


def add_compare_parser(commands) -> None:
    parser = commands.add_parser(
        "compare", help="train several algorithms x seeds on one task or the task suite; write curves, tables, JSON")
    parser.add_argument("--algos", default="ppo,grpo,rloo,reinforce,a2c,maskable_ppo,trpo",
                        help=f"comma-separated; SB3: {', '.join(BACKENDS['sb3'])}; RLlib: rllib_ppo, appo, impala "
                             "(default: ppo,grpo,rloo,reinforce,a2c,maskable_ppo,trpo)")
    parser.add_argument("--seeds", type=int, default=3, help="runs per algorithm and task, seeds 0..N-1 (default: 3)")
    parser.add_argument("--steps", type=int, default=None, help="env steps (tokens) per run (default: each task's "
                                                                "tuned budget, else 49152)")
    parser.add_argument("--budget-scale", type=float, default=1.0,
                        help="multiply each task's own step budget (instead of --steps), e.g. 0.25 for a quick suite "
                             "(default: 1.0)")
    parser.add_argument("--every", type=int, default=None,
                        help="env steps between learning-curve points (default: 1/20 of each run's steps)")
    parser.add_argument("--env", action="append", default=None,
                        help=HELP["env"].split(";")[0] + "; repeat it to compare on several tasks (default: TextGen-v0)")
    parser.add_argument("--suite", action="store_true",
                        help="compare on every bundled task with a known optimum, lm_gym.suite() (default: off)")
    parser.add_argument("--model", default=None, help=HELP["model"])
    parser.add_argument("--reward", default=None, help=HELP["reward"])
    parser.add_argument("--reward-kwargs", type=json.loads, default={}, help=HELP["reward_kwargs"])
    parser.add_argument("--max-new-tokens", type=int, default=None, help=HELP["max_new_tokens"])
    parser.add_argument("--env-kwargs", type=json.loads, default={}, help=HELP["env_options"])
    parser.add_argument("--kl-coef", type=float, default=None,
                        help="KL shaping for the on-policy algorithms, per nat per token (default: each task's, else "
                             "0.05)")
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="for every policy-gradient run (default: each task's, else each algorithm's)")
    parser.add_argument("--n-steps", type=int, default=None,
                        help="rollout length, in env steps (tokens) per env (default: each task's, else each "
                             "algorithm's)")
    parser.add_argument("--n-envs", type=int, default=8, help=HELP["n_envs"])
    parser.add_argument("--eval-samples", type=int, default=8, help=HELP["eval_samples"])
    parser.add_argument("--device", default="auto", help=HELP["device"])
    parser.add_argument("--stall-timeout", type=float, default=None,
                        help="seconds without env steps before a stalled run ends the comparison, saying what it "
                             "waited for " + STALL_TIMEOUT_DEFAULT)
    parser.add_argument("--out", default="runs", help="parent directory of the comparison's directory (default: runs)")
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


# What a user can get wrong (a value, a path, a file, a missing extra, a full disk, an unreachable cluster): these print
# as one line and exit 2, like argparse's own errors. Anything else is a bug and keeps its traceback.
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


def quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one progress bar (training), not one per checkpoint load
    hf_logging.set_verbosity_error()


def run(args: argparse.Namespace) -> None:
    if args.command == "train":
        given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
        if args.resume and (given or args.config):
            raise ValueError("--resume RUN takes no other options: the run's config.yaml holds them.")
        # The config first: a value of the wrong type is refused before the run's imports.
        config = None if args.resume else TrainConfig.from_dict(
            {**(read_yaml(args.config) if args.config else {}), **given}, source=args.config or "flags")
        quiet_transformers()
        from agents.runs.train import train

        train(config, resume=args.resume)
        return
    quiet_transformers()
    if args.command == "evaluate":
        from agents.runs.evaluate import evaluate_run

        evaluate_run(args.run, prompts=args.prompts, samples=args.samples, seed=args.seed, device=args.device)
    elif args.command == "compare":
        from agents.runs.compare import compare
        from lm_gym.task_suite import suite

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
