"""Target 3: one end-to-end PPO iteration, lm-gym vs Hugging Face TRL's last PPO trainer.

TRL removed PPOTrainer from its main API; the ``trl==0.28.0`` wheel still ships it as
``trl.experimental.ppo``. Install it in a separate environment (it is never a dependency of lm-gym):

    python3 -m venv /tmp/trl-venv && /tmp/trl-venv/bin/pip install torch==2.13.0 trl==0.28.0
    python benchmarks/vs_trl.py --trl-python /tmp/trl-venv/bin/python [--shape tiny|gpt2-small|qwen2-0.5b]
                                [--dtype bfloat16]

Both sides get the same models built from one config (policy and its reference; a sequence-classification
reward model of the same shape; TRL also needs a separate value model, lm-gym has a value head), the same
prompts (batch of 8, 16 tokens), 32 sampled tokens per completion with no early stop, per-token KL to the
reference, and the same number of PPO epochs with one minibatch. The driver runs the two sides in turn,
each in its own process, and reports the median seconds per iteration (after a warm-up iteration).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def build_models(shape: str, out: Path) -> None:
    """Policy (causal LM) and reward (sequence classifier) of one shape, with the bundled tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    import lm_gym
    from harness import ARCHITECTURES, SHAPES

    tokenizer = lm_gym.load_tokenizer()
    dims = dict(SHAPES[shape] or dict(n_layer=2, n_embd=64, n_head=4, vocab_size=len(tokenizer)))
    config_class, _ = ARCHITECTURES[dims.pop("architecture", "gpt2")]
    positions = {"max_position_embeddings": 256} if "hidden_size" in dims else {"n_positions": 256}
    config = config_class(**positions, eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id, **dims)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(out / "policy")
    config.num_labels = 1
    AutoModelForSequenceClassification.from_config(config).save_pretrained(out / "reward")
    for name in ("policy", "reward"):
        tokenizer.save_pretrained(out / name)


def run_ours(models: Path, prompts: list[str], new_tokens: int, epochs: int, iterations: int,
             dtype: str | None) -> float:
    import torch
    from stable_baselines3 import PPO

    import lm_gym
    from agents import EpisodeRolloutBuffer, KLPenaltyCallback, LMActorCriticPolicy

    torch.manual_seed(0)
    policy = str(models / "policy")
    env = lm_gym.make_vec_env(len(prompts), seed=0, model=policy, prompts=prompts, max_new_tokens=new_tokens,
                              stop_tokens=[], reward="classifier",
                              reward_kwargs={"model": str(models / "reward"), "label": 0, "output": "logit"})
    model = PPO(LMActorCriticPolicy, env, n_steps=new_tokens, batch_size=new_tokens * len(prompts), n_epochs=epochs,
                learning_rate=3e-6, gamma=1.0, gae_lambda=0.95, seed=0, device="auto",
                policy_kwargs={"model": policy, **({"dtype": dtype} if dtype else {})},
                rollout_buffer_class=EpisodeRolloutBuffer)
    callback = KLPenaltyCallback(coef=0.05)
    steps = new_tokens * len(prompts)
    model.learn(steps, callback=callback)  # warm-up iteration (also loads the reference)
    _sync()
    start = time.perf_counter()
    model.learn(steps * iterations, callback=callback, reset_num_timesteps=False)
    _sync()
    return (time.perf_counter() - start) / iterations


def run_trl(models: Path, prompts: list[str], new_tokens: int, epochs: int, iterations: int,
            dtype: str | None) -> float:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(models / "policy")
    dataset = Dataset.from_dict({"input_ids": [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]})

    def trainer(episodes: int, out: str) -> PPOTrainer:
        args = PPOConfig(output_dir=out, per_device_train_batch_size=len(prompts), gradient_accumulation_steps=1,
                         num_mini_batches=1, num_ppo_epochs=epochs, total_episodes=episodes,
                         response_length=new_tokens, stop_token=None, missing_eos_penalty=None, temperature=1.0,
                         kl_coef=0.05, learning_rate=3e-6, local_rollout_forward_batch_size=len(prompts),
                         num_sample_generations=0, report_to=[], save_strategy="no", logging_steps=10**6,
                         use_cpu=not torch.cuda.is_available(), seed=0, dataloader_num_workers=0)
        load = lambda cls, name: cls.from_pretrained(models / name, dtype=getattr(torch, dtype or "float32"))
        return PPOTrainer(args=args, processing_class=tokenizer, model=load(AutoModelForCausalLM, "policy"),
                          ref_model=load(AutoModelForCausalLM, "policy"),
                          reward_model=load(AutoModelForSequenceClassification, "reward"),
                          value_model=load(AutoModelForSequenceClassification, "reward"), train_dataset=dataset)

    with tempfile.TemporaryDirectory() as out:
        trainer(len(prompts), out).train()  # warm-up iteration
        timed = trainer(len(prompts) * iterations, out)
        _sync()
        start = time.perf_counter()
        timed.train()
        _sync()
    return (time.perf_counter() - start) / iterations


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trl-python", help="python of the environment with trl==0.28.0")
    parser.add_argument("--ours-only", action="store_true", help="time lm-gym's side alone (no TRL environment)")
    parser.add_argument("--shape", default="tiny")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=2, help="timed iterations per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], help="both sides' weights (default: float32)")
    parser.add_argument("--side", choices=["ours", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--models", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:  # one side, in its own environment: print seconds per iteration as the last line
        prompts = json.loads((args.models / "prompts.json").read_text())
        run = run_ours if args.side == "ours" else run_trl
        print(json.dumps(run(args.models, prompts, args.new_tokens, args.epochs, args.iterations, args.dtype)))
        return
    if not args.trl_python and not args.ours_only:
        parser.error("--trl-python is required (see the docstring for the separate TRL environment), or --ours-only")
    from harness import machine, prompts_of_length

    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp)
        build_models(args.shape, models)
        (models / "prompts.json").write_text(json.dumps(prompts_of_length(16, 8)))
        seconds: dict[str, list[float]] = {"ours": [], "trl": []}
        for _ in range(args.repeats):
            for side, python in (("ours", sys.executable), ("trl", args.trl_python))[:1 if args.ours_only else 2]:
                cmd = [python, str(HERE / "vs_trl.py"), "--side", side, "--models", str(models),
                       "--new-tokens", str(args.new_tokens), "--epochs", str(args.epochs),
                       "--iterations", str(args.iterations), *(["--dtype", args.dtype] if args.dtype else [])]
                result = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE)
                if result.returncode != 0:
                    sys.exit(f"{side} side failed:\n{result.stderr[-3000:]}")
                seconds[side].append(float(result.stdout.strip().splitlines()[-1]))
    ours = statistics.median(seconds["ours"])
    print(f"# one PPO iteration: {args.shape} ({args.dtype or 'float32'}), batch 8, 16+{args.new_tokens} tokens, {args.epochs} epochs; {machine()}")
    print(f"lm-gym (stock SB3 PPO)   {ours:8.3f} s/iteration   runs: {seconds['ours']}")
    if args.ours_only:
        print("TRL 0.28 PPOTrainer      not run (--ours-only)")
        return
    trl = statistics.median(seconds["trl"])
    print(f"TRL 0.28 PPOTrainer      {trl:8.3f} s/iteration   runs: {seconds['trl']}")
    print(f"lm-gym speed-up over TRL: {trl / ours:.2f}x (target > 1.0x)")


if __name__ == "__main__":
    main()
