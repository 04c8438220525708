"""TextGen-Arithmetic-v0: offline, exact rewards, disjoint held-out problems, a bundled LM with room to improve."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import lm_gym
from agents import LMActorCriticPolicy, sample_episodes, summarize
from agents.runs.train import TrainConfig


def test_gym_make_works_offline_and_passes_both_env_checkers():
    env = gym.make("TextGen-Arithmetic-v0")
    assert env.action_space == gym.spaces.Discrete(15)
    assert env.observation_space["input_ids"].shape == (10,) and env.observation_space["input_ids"].dtype == np.int64
    check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped, warn=False)


def test_held_out_problems_are_never_trained_on_and_answers_are_right():
    train, test = lm_gym.arithmetic_problems("train"), lm_gym.arithmetic_problems("test")
    assert len(test) == 500 and len(train) == 100 * 100 + 5050 - 500
    assert not {p.text for p in train} & {p.text for p in test}
    for problem in train[:200] + test:
        a, op, b = problem.text[:-1].partition("+") if "+" in problem.text else problem.text[:-1].partition("-")
        assert problem.references == (str(int(a) + int(b) if op == "+" else int(a) - int(b)),)
    with pytest.raises(ValueError, match="split='dev'"):
        lm_gym.arithmetic_problems("dev")


def test_the_exact_answer_earns_one_and_anything_else_zero():
    env = gym.make("TextGen-Arithmetic-v0", split="test").unwrapped
    tokenizer = env.tokenizer
    for answer, expected in (("right", 1.0), ("wrong", 0.0)):
        _, info = env.reset(seed=3)
        problem = next(p for p in env.prompts if p.text == info["prompt"])
        text = problem.references[0] if answer == "right" else str(int(problem.references[0]) + 1)
        reward, terminated = 0.0, False
        for token in tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]:
            _, reward, terminated, _, _ = env.step(token)
        assert terminated and reward == expected
    assert lm_gym.make_reward("exact_match")(["1+1="], [" 2 "], [("2",)]) == [1.0]


def test_the_bundled_lm_starts_clearly_between_0_1_and_0_6_held_out_accuracy():
    env = lm_gym.ArithmeticEnv(split="test")
    policy = LMActorCriticPolicy(env.observation_space, env.action_space, lambda _: 1e-4, model=str(lm_gym.ARITHMETIC_MODEL))
    torch.manual_seed(0)
    accuracy = summarize(sample_episodes(policy, env, lm_gym.arithmetic_problems("test"), 2))["reward_mean"]
    assert 0.2 <= accuracy <= 0.5, accuracy  # measured 0.34-0.35


def test_train_config_takes_the_envs_defaults_unless_given():
    config = TrainConfig(env="TextGen-Arithmetic-v0")
    assert (config.reward, config.max_new_tokens, config.lm) == ("exact_match", 4, str(lm_gym.ARITHMETIC_MODEL))
    train, held_out = config.prompt_sets()
    assert held_out == lm_gym.arithmetic_problems("test") and len(train) == 14_550
    assert TrainConfig(env="TextGen-Arithmetic-v0", max_new_tokens=6).max_new_tokens == 6
    assert (TrainConfig().reward, TrainConfig().max_new_tokens, TrainConfig().lm) == ("sentiment", 16, None)
    with pytest.raises(ValueError, match="env='Pong-v5'"):
        TrainConfig(env="Pong-v5")
