"""TextGen-GuessNumber-v1: the game's rules and optimum, its splits, its bundled LM's starting point, and runs."""

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import lm_gym
from agents import LMActorCriticPolicy, sample_episodes
from agents.runs.cli import main
from lm_gym.tasks.guess_number import HELD_OUT_GAMES, MAX_TURNS, SPAN, GuessNumber, binary_search_turns, games, range_starts


def test_binary_search_finds_every_number_within_the_turn_limit_through_the_text_env():
    game = GuessNumber("train", max_turns=MAX_TURNS)
    for seed in range(0, len(games("train")), 7):  # every range, most secrets
        first, _ = game.reset(seed=seed)
        low, high = map(int, first.removeprefix("Guess my number from ").split(" in ")[0].split(" to "))
        assert high - low + 1 == SPAN and (low, game.secret) == games("train")[seed]
        start, turns = (low, high), 0
        while True:
            guess = (low + high) // 2
            reply, reward, terminated, _, info = game.step(f"{guess}")
            turns += 1
            if reward == 1.0:
                break
            assert not terminated and reply.startswith(("higher", "lower"))
            low, high = map(int, reply.split(", ")[1].split(" to "))  # the host's range is the hints' range
        assert info["turns"] == turns == binary_search_turns(game.secret, *start) <= MAX_TURNS == 6
    assert np.mean([binary_search_turns(s, 1, 100) for s in range(1, 101)]) == pytest.approx(5.8)


def test_splits_are_disjoint_ranges_and_seeds_pick_each_held_out_game_once():
    train, test = range_starts("train"), range_starts("test")
    assert len(train) == 40 and len(test) == 10 and not set(train) & set(test)
    assert sorted(train + test) == list(range(1, 51)) and max(low + SPAN - 1 for low in train + test) == 99
    # Every training range is played with every secret in it: no secret is more likely than another, so a policy
    # cannot fit the training secrets instead of searching.
    assert sorted(games("train")) == sorted((low, low + k) for low in train for k in range(SPAN))
    held_out = games("test")
    assert len(held_out) == HELD_OUT_GAMES == 40 and {low for low, _ in held_out} == set(test)
    assert all(low <= secret < low + SPAN for low, secret in held_out)
    game = GuessNumber("test")
    assert [(game.reset(seed=i)[1]["low"], game.secret) for i in range(HELD_OUT_GAMES)] == held_out


def test_bad_guesses_cost_a_turn_and_the_game_ends_lost_after_six():
    game = GuessNumber("test")
    game.reset(seed=0)
    low, high = game.first, game.last
    assert game.step("no idea")[:3] == (f"a number from {low} to {high}", 0.0, False)
    assert game.step(str(high + 1))[0] == f"a number from {low} to {high}"
    for _ in range(3):
        reply, reward, terminated, _, _ = game.step("0")
    wrong = next(n for n in range(low, high + 1) if n != game.secret)
    reply, reward, terminated, truncated, info = game.step(str(wrong))
    assert terminated and not truncated and reward == 0.0 and reply == f"no, it was {game.secret}"


def test_the_env_passes_the_gymnasium_checks_and_registers():
    env = gym.make("TextGen-GuessNumber-v1")
    check_env(env.unwrapped, skip_render_check=True)
    assert env.observation_space["input_ids"].shape == (128,)


def test_the_changed_games_old_id_is_refused_naming_the_new_one(cli_error):
    """v0 was another game (1-100, 7 guesses, split over secrets): Gymnasium's convention is a new version."""
    with pytest.raises(gym.error.DeprecatedEnv, match="TextGen-GuessNumber-v1"), \
            pytest.warns(DeprecationWarning, match="upgrading to version `v1`"):
        gym.make("TextGen-GuessNumber-v0")
    assert "use TextGen-GuessNumber-v1" in cli_error("train", "--env", "TextGen-GuessNumber-v0")


@pytest.mark.slow
def test_the_bundled_lm_starts_clearly_between_zero_and_the_optimum():
    env = lm_gym.GuessNumberEnv(split="test")
    policy = LMActorCriticPolicy(env.observation_space, env.action_space, lambda _: 1e-4,
                                 model=str(lm_gym.GUESS_NUMBER_MODEL))
    torch.manual_seed(0)
    episodes = sample_episodes(policy, env, [{"text_env_seed": i} for i in range(HELD_OUT_GAMES)], 8)
    success = np.mean([e.reward for e in episodes])
    assert 0.1 <= success <= 0.6, success  # measured 0.34 (the optimum is 1.0)
    assert all(e.completion.count("\n") >= 2 for e in episodes)  # it plays the format: guess, reply, ...


@pytest.mark.slow
def test_lm_gym_train_runs_the_multi_turn_task_end_to_end(tmp_path, cli_error):
    main(["train", "--env", "TextGen-GuessNumber-v1", "--steps", "1024", "--eval-samples", "1", "--checkpoint-every",
          "0", "--out", str(tmp_path)])
    (run,) = tmp_path.iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["before"]["episodes"] == HELD_OUT_GAMES
    assert all(s["prompt"].startswith("Guess my number") and "\n" in s["completion"] for s in summary["samples_after"])
    assert (run / "model.zip").exists() and (run / "lm" / "model.safetensors").exists()
    assert "multi-turn: its text env pays the rewards" in cli_error(
        "train", "--env", "TextGen-GuessNumber-v1", "--reward", "sentiment", "--out", str(tmp_path))
