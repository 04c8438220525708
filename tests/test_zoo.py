"""The RL Baselines3 Zoo recipe (examples/zoo/): train, enjoy and -optimize run as the README writes them."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ZOO = ["--algo", "ppo", "--env", "TextGen-v0", "--gym-packages", "lm_gym", "agents"]


def run(tmp_path, *args: str) -> str:
    done = subprocess.run([sys.executable, *args], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr  # optuna logs its trials to stderr


@pytest.mark.slow
def test_the_zoo_trains_evaluates_and_searches_the_lm_policy(tmp_path):
    pytest.importorskip("rl_zoo3", reason="the zoo recipe needs lm-gym[zoo] (the test extra installs it)")
    conf = str(ROOT / "examples" / "zoo" / "ppo.yml")
    out = run(tmp_path, "-m", "rl_zoo3.train", *ZOO, "--conf-file", conf, "-n", "1024", "--eval-freq", "512",
              "--eval-episodes", "4", "--n-eval-envs", "1", "-f", "logs", "--seed", "0")
    assert "kl/" in out and "policy_gradient_loss" in out  # stock PPO with the KL callback from the YAML
    saved = tmp_path / "logs" / "ppo" / "TextGen-v0_1"
    assert (saved / "TextGen-v0.zip").exists() and (saved / "best_model.zip").exists()
    enjoy = run(tmp_path, "-m", "rl_zoo3.enjoy", *ZOO, "-f", "logs", "--exp-id", "1", "-n", "64", "--no-render")
    assert "Mean reward" in enjoy
    search = run(tmp_path, str(ROOT / "examples" / "zoo" / "optimize.py"), *ZOO, "--conf-file", conf, "-optimize",
                 "--n-trials", "2", "-n", "512", "--eval-episodes", "4", "--n-evaluations", "1", "--no-optim-plots",
                 "-f", "search", "--seed", "0")
    # The search space is the LM's: learning rate, rollout size, minibatch, epochs and the KL coefficient.
    trials = [line for line in search.splitlines() if "Trial " in line and "finished with value" in line]
    assert len(trials) == 2 and all(name in trials[0] for name in
                                    ("'learning_rate'", "'n_steps'", "'batch_size'", "'n_epochs'", "'kl_coef'"))
    assert "net_arch" not in search and "activation_fn" not in search
