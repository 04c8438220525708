"""The ``lm-gym`` command line: ``lm-gym train`` and ``lm-gym compare`` (see ``--help`` of each)."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields

from transformers.utils import logging as hf_logging

from agents.algorithms import ALGORITHMS
from agents.compare import compare
from agents.train import TrainConfig, train

HELP = {
    "algo": f"RL algorithm: {', '.join(ALGORITHMS)}",
    "model": "Hugging Face name or local path of the causal LM (default: the bundled tiny LM)",
    "reward": "reward name (see lm_gym.REWARDS)",
    "reward_kwargs": 'reward arguments as JSON, e.g. \'{"target": "great"}\'',
    "prompts": "training prompts: a .txt or .jsonl file (default: bundled review openings)",
    "eval_prompts": "held-out prompts for the before/after report (default: bundled held-out openings)",
    "steps": "total env steps (generated tokens) to train on",
    "kl_coef": "KL-to-initial-LM coefficient (initial value when --kl-target is set)",
    "kl_target": "adaptive KL: target KL per episode in nats",
    "device": "auto, cpu or cuda",
    "out": "parent directory of the new run directory",
}


FIELD_TYPES = {"kl_target": float, "learning_rate": float, "n_steps": int, "batch_size": int, "n_epochs": int}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lm-gym", description="RL fine-tuning of causal LMs on TextGen-v0.")
    commands = parser.add_subparsers(dest="command", required=True)
    train_parser = commands.add_parser(
        "train", help="train a policy; with no arguments, PPO on the bundled offline sentiment task",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        if f.name == "env_options":  # reachable from Python and `compare --env-kwargs`
            continue
        default = getattr(defaults, f.name)
        flag = "--" + f.name.replace("_", "-")
        if f.name == "reward_kwargs":
            train_parser.add_argument(flag, type=json.loads, default={}, help=HELP[f.name])
        elif f.name == "algo":
            train_parser.add_argument(flag, choices=sorted(ALGORITHMS), default=default, help=HELP[f.name])
        else:
            kind = type(default) if default is not None else FIELD_TYPES.get(f.name, str)
            train_parser.add_argument(flag, type=kind, default=default, help=HELP.get(f.name, f.name.replace("_", " ")))
    add_compare_parser(commands)
    return parser


def add_compare_parser(commands) -> None:
    parser = commands.add_parser(
        "compare", help="train several algorithms x seeds on one task; write curves.png, results.md, results.json",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--algos", default="ppo,a2c,maskable_ppo,trpo,dqn",
                        help=f"comma-separated, from: {', '.join(ALGORITHMS)}")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8192, help="env steps per run")
    parser.add_argument("--every", type=int, default=None, help="env steps between learning-curve points")
    parser.add_argument("--model", default=None, help=HELP["model"])
    parser.add_argument("--reward", default="sentiment", help=HELP["reward"])
    parser.add_argument("--reward-kwargs", type=json.loads, default={}, help=HELP["reward_kwargs"])
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--env-kwargs", type=json.loads, default={},
                        help='any other TextGenEnv arguments as JSON, e.g. \'{"stop_tokens": []}\'')
    parser.add_argument("--kl-coef", type=float, default=0.0, help="KL shaping for the on-policy algorithms")
    parser.add_argument("--n-envs", type=int, default=8)
    parser.add_argument("--eval-samples", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="runs")


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    hf_logging.disable_progress_bar()  # one progress bar (training), not one per checkpoint load
    hf_logging.set_verbosity_error()
    if args.command == "train":
        config = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig) if f.name != "env_options"})
        train(config)
    elif args.command == "compare":
        base = TrainConfig(model=args.model, reward=args.reward, reward_kwargs=args.reward_kwargs,
                           max_new_tokens=args.max_new_tokens, steps=args.steps, n_envs=args.n_envs,
                           kl_coef=args.kl_coef, device=args.device, eval_samples=args.eval_samples, out=args.out,
                           env_options=args.env_kwargs)
        compare([a.strip() for a in args.algos.split(",") if a.strip()], args.seeds, base, every=args.every)


if __name__ == "__main__":
    main()
