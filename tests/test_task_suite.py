"""The task suite: TextGen-Calculator-v0 and TextGen-GridWorld-v0 (rules, optima, splits, bundled LMs), the suite's
optima against their solvers, per-task defaults, ``optimum`` in summary.json and ``lm-gym compare --suite``."""

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import lm_gym
from agents.sb3.algorithms import ALGORITHMS
from agents import LMActorCriticPolicy, sample_episodes
from agents.runs.cli import main
from agents.runs.config import DEFAULT_KL_COEF, DEFAULT_STEPS, TrainConfig
from agents.runs.tasks import TASKS
from lm_gym.tasks.calculator import HELD_OUT_PROBLEMS, Calculator, calculate, problems, tool_use_turns
from lm_gym.tasks.grid_world import (HELD_OUT_LAYOUTS, MOVE_COST, GridWorld, layouts, optimal_moves, optimal_return,
                                     shortest_paths, way_to_goal)


def play_text(env: lm_gym.MultiTurnEnv, instance: int, next_turn) -> tuple[float, int]:
    """Play one held-out instance through the token-level env, each turn's text from ``next_turn(text_env)``:
    (return, turns)."""
    env.reset(seed=0, options={"text_env_seed": instance})
    total, done, turns = 0.0, False, 0
    while not done:
        turns += 1
        for token in [*env.codec.encode(next_turn(env.text_env)), env.codec.end_id]:
            _, reward, terminated, truncated, info = env.step(token)
            total, done = total + reward, terminated or truncated
            if info["turn_end"]:
                break
    return total, turns


# ----- the suite's optima are what the solvers achieve through the token-level envs -----

def binary_search(game: lm_gym.GuessNumber) -> str:
    return str((game.low + game.high) // 2)


def tool_use(game: Calculator) -> str:
    return tool_use_turns(game.a, game.b)[game.turn]


def shortest_path(game: GridWorld) -> str:
    return optimal_moves(game.layout, game.position)[0]


SOLVERS = {"TextGen-GuessNumber-v1": binary_search, "TextGen-Calculator-v0": tool_use,
           "TextGen-GridWorld-v0": shortest_path}


@pytest.mark.parametrize("env_id", list(SOLVERS))
def test_each_multi_turn_tasks_optimum_is_what_its_solver_scores_on_the_held_out_instances(env_id):
    task, env = lm_gym.suite_task(env_id), gym.make(env_id, split="test").unwrapped
    instances = TASKS[env_id].held_out_instances()
    played = [play_text(env, i["text_env_seed"], SOLVERS[env_id]) for i in instances]
    assert np.mean([r for r, _ in played]) == pytest.approx(task.optimum)
    if env_id == "TextGen-GuessNumber-v1":
        assert np.mean([t for _, t in played]) == pytest.approx(4.625) and task.optimum_detail.startswith("4.62")
    if env_id == "TextGen-Calculator-v0":
        assert {t for _, t in played} == {2} and task.optimum == 1.0
    if env_id == "TextGen-GridWorld-v0":
        assert task.optimum == pytest.approx(0.8015)  # 3.97 moves on average


def test_the_suite_lists_each_task_once_with_its_metric():
    ids = [task.env_id for task in lm_gym.suite()]
    assert ids == ["TextGen-Arithmetic-v0", "TextGen-GuessNumber-v1", "TextGen-Calculator-v0", "TextGen-GridWorld-v0"]
    assert all(task.env_id in TASKS and task.metric and task.solver for task in lm_gym.suite())
    assert lm_gym.suite_task("TextGen-v0") is None  # the sentiment lexicon has no known optimum


# ----- TextGen-Calculator-v0 -----

def test_the_calculator_tool_and_the_answer_turn():
    assert calculate("347*86") == "29842" and calculate(" 12 + 30 ") == "42" and calculate("9-12") == "-3"
    assert calculate("2**10") == "error" and calculate("__import__('os')") == "error"
    game = Calculator("test")
    question, info = game.reset(seed=3)
    a, b = problems("test")[3]
    assert question == f"{a}*{b}" and info["product"] == a * b
    assert game.step(f"let me see <calc>{a}*{b}</calc>")[:3] == (str(a * b), 0.0, False)
    assert game.step(f"{a * b}")[:3] == ("correct", 1.0, True)
    game.reset(seed=3)
    reply, reward, terminated, _, info = game.step(str(a * b + 1))  # an answer without the tool, wrong
    assert (reward, terminated, info["tool_calls"]) == (0.0, True, 0) and reply == f"wrong, it is {a * b}"
    game.reset(seed=3)
    for _ in range(2):
        assert game.step("<calc>1+1</calc>")[1:3] == (0.0, False)
    assert game.step("<calc>1+1</calc>")[:3] == ("no answer", 0.0, True)  # the third turn may not be a call


def test_calculator_splits_are_disjoint_and_hard_for_the_head():
    train, test = problems("train"), problems("test")
    assert len(test) == HELD_OUT_PROBLEMS and len(train) == 900 * 90 - HELD_OUT_PROBLEMS and not set(train) & set(test)
    assert all(100 <= a <= 999 and 10 <= b <= 99 for a, b in test)


# ----- TextGen-GridWorld-v0 -----

def test_grid_world_moves_bumps_and_costs():
    game = GridWorld("test")
    text, info = game.reset(seed=0)
    layout = layouts("test")[0]
    assert text == layout.describe() and info["optimal_return"] == optimal_return(layout)
    assert text.startswith("5x5 grid, walls ") and f"you {layout.start[0]},{layout.start[1]}. goal " in text
    reply, reward, terminated, _, _ = game.step("hello")
    assert reply.startswith("say up, down, left or right") and reward == -MOVE_COST and not terminated
    total, turns = -MOVE_COST, 1
    while True:
        reply, reward, terminated, _, info = game.step(optimal_moves(layout, game.position)[0])
        total, turns = total + reward, turns + 1
        if terminated:
            break
    assert reply == "goal" and info["success"]
    assert total == pytest.approx(optimal_return(layout) - MOVE_COST)  # one wasted turn
    wall = next(iter(layout.walls))
    game.reset(seed=0)
    game.position = (wall[0] - 1, wall[1]) if wall[0] > 0 else (wall[0] + 1, wall[1])
    if game.position not in layout.walls and game.position != layout.goal:
        move = "right" if wall[0] > 0 else "left"
        assert game.step(move)[0] == f"bump, {way_to_goal(layout, game.position)}"


def test_the_host_says_where_the_goal_lies():
    layout = layouts("test")[0]
    gx, gy = layout.goal
    assert way_to_goal(layout, (gx - 3, gy + 2)) == "goal 3 right 2 up"
    assert way_to_goal(layout, (gx + 1, gy)) == "goal 1 left"
    assert way_to_goal(layout, (gx, gy - 4)) == "goal 4 down"


def test_grid_world_ends_after_twelve_turns_and_layouts_are_disjoint_and_solvable():
    game = GridWorld("train")
    game.reset(seed=5)
    for turn in range(12):
        reply, reward, terminated, _, _ = game.step("up" if turn % 2 else "down")
        if reply == "goal":
            break
    assert terminated
    train, test = layouts("train"), layouts("test")
    assert len(test) == HELD_OUT_LAYOUTS and len(train) == 4000 and not set(train) & set(test)
    assert all(2 <= shortest_paths(layout)[layout.start] <= 8 for layout in test)


@pytest.mark.parametrize("env_id", ["TextGen-Calculator-v0", "TextGen-GridWorld-v0"])
def test_the_new_envs_pass_the_gymnasium_checks_and_register(env_id):
    env = gym.make(env_id)
    check_env(env.unwrapped, skip_render_check=True)
    assert env.action_space.n == len(env.unwrapped.tokenizer)


# ----- the bundled LMs start between 0.1 and 0.6 of the optimum -----

@pytest.mark.slow
@pytest.mark.parametrize("env_id", list(SOLVERS))
def test_each_bundled_lm_starts_clearly_between_zero_and_the_optimum(env_id):
    env = gym.make(env_id, split="test").unwrapped
    policy = LMActorCriticPolicy(env.observation_space, env.action_space, lambda _: 1e-4, model=TASKS[env_id].model)
    torch.manual_seed(0)
    episodes = sample_episodes(policy, env, TASKS[env_id].held_out_instances(), 2)
    fraction = np.mean([e.reward for e in episodes]) / lm_gym.suite_task(env_id).optimum
    assert 0.1 <= fraction <= 0.6, fraction
    assert all("\n" in e.completion for e in episodes)  # it plays the format: turn, reply, ...


# ----- per-task defaults, optimum in the report, compare --suite -----

def test_task_hyperparameters_fill_what_the_config_leaves_unset():
    for env_id in (task.env_id for task in lm_gym.suite()):
        tuned = TASKS[env_id].hyperparameters
        config = TrainConfig(env=env_id)
        assert config.steps == tuned.get("steps", DEFAULT_STEPS) and config.kl_coef == tuned.get("kl_coef", DEFAULT_KL_COEF)
        ppo = ALGORITHMS["ppo"].kwargs  # what is left unset resolves to the algorithm's own value, recorded
        assert config.learning_rate == tuned.get("learning_rate", ppo["learning_rate"])
        assert (config.n_steps, config.n_epochs) == (tuned.get("n_steps", ppo["n_steps"]), ppo["n_epochs"])
        assert TrainConfig(env=env_id, steps=64, learning_rate=1e-5).learning_rate == 1e-5
        trpo = TrainConfig(env=env_id, algo="trpo")  # its learning_rate is its critic's: the task's is not for it
        assert trpo.learning_rate == ALGORITHMS["trpo"].kwargs["learning_rate"] and trpo.steps == config.steps
        assert TrainConfig(env=env_id, algo="dqn").n_steps == 1  # DQN's n-step return, not a rollout
        assert TrainConfig(env=env_id, algo="a2c").n_epochs is None
    assert (TrainConfig().steps, TrainConfig().kl_coef) == (DEFAULT_STEPS, DEFAULT_KL_COEF)


@pytest.mark.slow
def test_train_reports_the_optimum_and_compare_suite_writes_one_table(tmp_path, capsys, cli_error):
    main(["train", "--env", "TextGen-Calculator-v0", "--steps", "256", "--eval-samples", "1", "--checkpoint-every",
          "0", "--out", str(tmp_path / "train")])
    (run,) = (tmp_path / "train").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["optimum"] == 1.0 and summary["metric"] == "exact-match accuracy"
    assert "optimum (exact-match accuracy): 1.000 by call the tool, copy its result" in capsys.readouterr().out
    main(["evaluate", str(run), "--samples", "1"])
    evaluation = json.loads(next(run.glob("evaluation-*.json")).read_text())
    assert evaluation["optimum"] == 1.0

    main(["compare", "--env", "TextGen-Calculator-v0", "--env", "TextGen-GridWorld-v0", "--algos", "ppo,grpo",
          "--seeds", "1", "--steps", "256", "--eval-samples", "1", "--n-envs", "4", "--out", str(tmp_path / "cmp")])
    (out,) = (tmp_path / "cmp").iterdir()
    table = (out / "suite.md").read_text().splitlines()
    assert table[0] == "| | TextGen-Calculator-v0 | TextGen-GridWorld-v0 |"
    assert [line.split("|")[1].strip() for line in table[2:7]] == ["metric", "initial LM", "ppo", "grpo", "optimum"]
    grid = json.loads((out / "suite.json").read_text())["TextGen-GridWorld-v0"]
    assert grid["optimum"] == pytest.approx(0.8015) and len(grid["final"]["ppo"]) == 1
    assert f"({grid['final']['ppo'][0] / grid['optimum']:.2f})" in table[4]
    for env_id in ("TextGen-Calculator-v0", "TextGen-GridWorld-v0"):
        assert (out / env_id / "curves.png").exists() and "| optimum (" in (out / env_id / "results.md").read_text()
    assert (out / "suite.png").read_bytes()[:4] == b"\x89PNG"
    assert "--suite or --env" in cli_error("compare", "--suite", "--env", "TextGen-v0")
