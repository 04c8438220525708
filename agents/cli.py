"""The ``lm-gym`` command line: ``lm-gym train`` (see ``lm-gym train --help``)."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields

from transformers.utils import logging as hf_logging

from agents.train import ALGORITHMS, TrainConfig, train

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lm-gym", description="RL fine-tuning of causal LMs on TextGen-v0.")
    commands = parser.add_subparsers(dest="command", required=True)
    train_parser = commands.add_parser(
        "train", help="train a policy; with no arguments, PPO on the bundled offline sentiment task",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        default = getattr(defaults, f.name)
        flag = "--" + f.name.replace("_", "-")
        if f.name == "reward_kwargs":
            train_parser.add_argument(flag, type=json.loads, default={}, help=HELP[f.name])
        elif f.name == "algo":
            train_parser.add_argument(flag, choices=sorted(ALGORITHMS), default=default, help=HELP[f.name])
        else:
            kind = type(default) if default is not None else (float if f.name == "kl_target" else str)
            train_parser.add_argument(flag, type=kind, default=default, help=HELP.get(f.name, f.name.replace("_", " ")))
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    hf_logging.disable_progress_bar()  # one progress bar (training), not one per checkpoint load
    hf_logging.set_verbosity_error()
    if args.command == "train":
        config = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
        train(config)


if __name__ == "__main__":
    main()
