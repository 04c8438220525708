import json
import re

import pytest
from stable_baselines3 import A2C, PPO
from huggingface_hub import ModelCard
from transformers import GenerationConfig, pipeline

from agents.runs.cli import build_parser, main

COMMON = ["--steps", "256", "--n-envs", "2", "--eval-samples", "2", "--max-new-tokens", "4"]
FAST = [*COMMON, "--n-steps", "32", "--batch-size", "32", "--n-epochs", "1"]


def test_train_writes_a_new_run_directory_that_loads_everywhere(tmp_path, capsys):
    main(["train", *FAST, "--out", str(tmp_path)])
    main(["train", *FAST, "--out", str(tmp_path)])  # same second, same algo: a second, separate run
    runs = sorted(tmp_path.iterdir())
    assert len(runs) == 2 and all(r.name.startswith("ppo-") for r in runs)
    run = runs[0]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["config"]["steps"] == 256 and summary["config"]["model"] is None
    assert {"reward_mean", "kl_mean"} <= set(summary["before"]) and len(summary["samples_after"]) == 16
    assert abs(summary["before"]["kl_mean"]) < 1e-4  # before training the policy is the reference
    model = PPO.load(run / "model.zip", device="cpu")
    assert model.num_timesteps == 256
    text = pipeline("text-generation", model=str(run / "lm"), device="cpu")("the movie was", max_new_tokens=3)
    assert text[0]["generated_text"].startswith("the movie was")
    out = capsys.readouterr().out
    assert "before" in out and "after" in out and "KL" in out
    # What Hugging Face users get: a model card, sampling as the policy did, and the values the run used.
    card = ModelCard.load(run / "lm" / "README.md")
    assert {"lm-gym", "ppo", "TextGen-v0"} <= set(card.data.tags) and card.data.base_model is None  # bundled LM
    assert f"| after | {summary['after']['reward_mean']:.3f}" in card.text and "| `learning_rate` | 0.0001 |" in card.text
    generation = GenerationConfig.from_pretrained(run / "lm")
    assert (generation.do_sample, generation.top_k, generation.top_p, generation.max_new_tokens) == (True, 0, 1.0, 4)
    assert (summary["config"]["learning_rate"], summary["config"]["batch_size"]) == (1e-4, 32)  # resolved, not null


def test_train_with_a2c_and_options(tmp_path):
    main(["train", *COMMON, "--n-steps", "8", "--algo", "a2c", "--reward", "length", "--reward-kwargs", '{"target": 3}',
          "--kl-target", "2.0", "--out", str(tmp_path)])
    (run,) = tmp_path.iterdir()
    assert run.name.startswith("a2c-")
    assert isinstance(A2C.load(run / "model.zip", device="cpu"), A2C)
    config = json.loads((run / "summary.json").read_text())["config"]
    assert config["reward_kwargs"] == {"target": 3} and config["kl_target"] == 2.0


def test_train_on_the_arithmetic_env_reports_on_its_held_out_problems(tmp_path):
    main(["train", "--env", "TextGen-Arithmetic-v0", "--algo", "rloo", "--steps", "256", "--n-steps", "16",
          "--eval-samples", "1", "--out", str(tmp_path)])
    (run,) = tmp_path.iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["config"]["env"] == "TextGen-Arithmetic-v0" and summary["config"]["reward"] == "exact_match"
    assert summary["after"]["episodes"] == 500  # the 500 held-out problems, once each
    answer = pipeline("text-generation", model=str(run / "lm"), device="cpu")("12+30=", max_new_tokens=3)
    assert answer[0]["generated_text"].startswith("12+30=")


def test_compare_puts_critic_free_methods_next_to_ppo(tmp_path):
    main(["compare", "--algos", "ppo,grpo,rloo", "--seeds", "1", "--steps", "512", "--eval-samples", "2",
          "--out", str(tmp_path)])
    (out,) = tmp_path.iterdir()
    results = json.loads((out / "results.json").read_text())["results"]
    assert list(results) == ["ppo", "grpo", "rloo"] and all(len(runs) == 1 for runs in results.values())
    assert "| grpo |" in (out / "results.md").read_text() and (out / "curves.png").exists()


def test_env_flag_fills_what_a_config_file_leaves_unset(tmp_path, monkeypatch):
    import agents.runs.train

    (tmp_path / "c.yaml").write_text("steps: 64\nkl_coef: 0.1\n")
    configs = []
    monkeypatch.setattr(agents.runs.train, "train", lambda config=None, **_: configs.append(config))
    main(["train", "--config", str(tmp_path / "c.yaml"), "--env", "TextGen-Arithmetic-v0"])
    (config,) = configs
    assert (config.reward, config.max_new_tokens, config.steps, config.kl_coef) == ("exact_match", 4, 64, 0.1)


def test_bad_cli_arguments_are_refused(capsys, cli_error):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--algo", "sac"])
    assert "invalid choice" in capsys.readouterr().err
    assert "not a known reward" in cli_error("train", *FAST, "--reward", "nope")
    assert re.search("n_epochs do.*not apply to algo='a2c'", cli_error("train", *COMMON, "--algo", "a2c", "--n-epochs", "2"))
    assert "group_size=4: only grpo, dr_grpo, rloo" in cli_error("train", *FAST, "--group-size", "4")
    assert re.search("env='CartPole-v1': choose one of .*or a text env id: 'gem:ID'",
                     cli_error("train", *FAST, "--env", "CartPole-v1"))
    with pytest.raises(ValueError, match="not a known reward"):  # --debug: the exception itself
        main(["--debug", "train", *FAST, "--reward", "nope"])


def test_examples_run_as_written(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    run = lambda *args: subprocess.run([sys.executable, *args], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    quick = run(str(root / "examples" / "quickstart.py"), "--steps", "256", "--out", "lm")
    assert quick.returncode == 0, quick.stderr[-2000:]
    assert "next token" in quick.stdout and (tmp_path / "lm" / "model.safetensors").exists()
    custom = run(str(root / "examples" / "custom_reward.py"))
    assert custom.returncode == 0, custom.stderr[-2000:]
    assert custom.stdout.count("trained") == 3
    multi_turn = run(str(root / "examples" / "custom_text_env.py"), "--steps", "512")
    assert multi_turn.returncode == 0, multi_turn.stderr[-2000:]
    assert "trained 512 steps" in multi_turn.stdout and "to go" in multi_turn.stdout
    comparison = run(str(root / "examples" / "compare_algorithms.py"), "--algos", "ppo,a2c", "--steps", "128",
                     "--seeds", "1", "--out", "cmp")
    assert comparison.returncode == 0, comparison.stderr[-2000:]
    assert (next((tmp_path / "cmp").iterdir()) / "curves.png").exists()


def test_every_train_flag_says_its_unit_and_where_its_default_comes_from():
    """`--learning-rate (default: 0.0001)` while TextGen-Arithmetic-v0 ran at 3e-4, `--group-size ... (default 4)
    (default: None)`: the help now says where each default comes from, once."""
    from dataclasses import fields

    from agents.runs.cli import HELP
    from agents.runs.config import TrainConfig

    train_parser = build_parser()._subparsers._group_actions[0].choices["train"]
    helps = {action.dest: " ".join(action.help.split()) for action in train_parser._actions if action.help}
    for f in fields(TrainConfig):
        assert f.name in HELP, f.name
        assert helps[f.name].count("(default") == 1, helps[f.name]
    for name in ("learning_rate", "n_steps", "batch_size", "n_epochs", "steps", "kl_coef", "lr_schedule"):
        assert "the task's" in helps[name], name
    for name in ("n_steps", "batch_size", "steps", "max_new_tokens"):
        assert "tokens" in helps[name], name
    assert "per held-out prompt" in helps["eval_samples"] and "nats" in helps["kl_target"]
    assert "~12 bytes per parameter" in helps["keep_checkpoints"]  # what a checkpoint costs
