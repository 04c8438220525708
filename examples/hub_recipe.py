"""The classic recipe on the Hugging Face hub: GPT-2 learns to write positive IMDB reviews.

GPT-2 continues the first 8 tokens of IMDB reviews for up to 16 tokens; the reward is the POSITIVE logit
of a DistilBERT sentiment classifier fine-tuned on IMDB; an adaptive KL penalty holds the policy near
6 nats per completion from the initial GPT-2 (Ziegler et al. 2019; TRL's gpt2-sentiment example).
Runs unchanged on a machine with hub access (a GPU is recommended; bf16 autocast is used on CUDA):

    pip install "lm-gym[all]"
    python examples/hub_recipe.py                  # add --lora to train LoRA adapters only

Every name can be swapped for a local path (the tests run this file on tiny local stand-ins):

    python examples/hub_recipe.py --policy ./my-gpt2 --classifier ./my-classifier --dataset ./my-imdb

The run directory gets checkpoints (continue with ``lm-gym train --resume RUN``), TensorBoard logs with
sample completions (``tensorboard --logdir RUN/tensorboard``), the SB3 zip and the LM in Hugging Face
format; ``lm-gym evaluate RUN`` reports reward, KL, perplexity, distinct-n and EOS rate afterwards.
"""

from __future__ import annotations

import argparse

import torch

from agents import TrainConfig, train

LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "target_modules": ["c_attn", "c_proj", "c_fc"]}


def recipe(policy: str = "gpt2", classifier: str = "lvwerra/distilbert-imdb", dataset: str = "stanfordnlp/imdb",
           split: str = "train", eval_split: str = "test[:64]", steps: int = 262_144, n_envs: int = 64,
           lora: bool = False, out: str = "runs") -> TrainConfig:
    """The recipe as a :class:`TrainConfig` (the same keys a ``--config`` YAML file takes)."""
    on_gpu = torch.cuda.is_available()
    return TrainConfig(
        algo="ppo",
        model=policy,
        reward="classifier",
        reward_kwargs={"model": classifier, "label": "POSITIVE", "output": "logit"},
        prompts=dataset,
        prompt_column="text",
        split=split,
        eval_split=eval_split,
        env_options={"max_prompt_tokens": 8, "truncate_prompts": True},
        max_new_tokens=16,
        steps=steps,
        n_envs=n_envs,
        n_steps=16,  # 16 tokens x n_envs per rollout
        batch_size=256,  # env steps per minibatch (whole episodes)
        n_epochs=4,
        learning_rate=1e-4 if lora else 1.41e-5,  # adapters start at zero and need a larger step
        kl_coef=0.2,
        kl_target=6.0,
        lora=LORA if lora else None,
        autocast_dtype="bfloat16" if on_gpu and torch.cuda.is_bf16_supported() else None,
        eval_samples=4,
        checkpoint_every=32_768,
        out=out,
    )


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = recipe()
    parser.add_argument("--policy", default=defaults.model, help="causal LM: hub name or local path")
    parser.add_argument("--classifier", default=defaults.reward_kwargs["model"],
                        help="text classifier with a POSITIVE label: hub name or local path")
    parser.add_argument("--dataset", default=defaults.prompts, help="dataset with a 'text' column: hub name or path")
    parser.add_argument("--split", default=defaults.split)
    parser.add_argument("--eval-split", default=defaults.eval_split)
    parser.add_argument("--steps", type=int, default=defaults.steps, help="generated tokens to train on")
    parser.add_argument("--n-envs", type=int, default=defaults.n_envs)
    parser.add_argument("--lora", action="store_true", help="train LoRA adapters only (needs peft)")
    parser.add_argument("--out", default=defaults.out)
    args = parser.parse_args(argv)
    config = recipe(args.policy, args.classifier, args.dataset, args.split, args.eval_split, args.steps,
                    args.n_envs, args.lora, args.out)
    return train(config)


if __name__ == "__main__":
    main()
