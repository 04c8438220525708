"""Learning tests: stock PPO measurably moves a reward whose optimum is known."""

import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

import lm_gym
from agents import KLPenaltyCallback, LMActorCriticPolicy, sample_episodes, summarize
from agents.runs.compare import run_one
from agents.runs.config import TrainConfig

HELD_OUT = [p.text for p in lm_gym.load_prompts(lm_gym.HELDOUT_PROMPTS)]


def held_out_reward(model, env):
    torch.manual_seed(0)
    return summarize(sample_episodes(model.policy, env, HELD_OUT, samples_per_prompt=8))["reward_mean"]


def test_ppo_learns_the_target_word_task_toward_its_optimum():
    """The plain stock path (SB3's make_vec_env and default buffer) raises the held-out reward from ~0.02 to
    the optimum, 1.0, on prompts never trained on.

    PPO on this task settles in a partial optimum ("was great ." scores 0.5) on about one seed in ten
    whatever the recipe (measured over 32 seeds each for eight recipes: batch size, learning rate, epochs,
    an entropy bonus, a KL penalty, clipping, dense rewards, an unshared critic; 1 or 2 threads). So the test
    trains three seeds: every seed must learn (>= 0.3, 15x its start; stuck seeds end at 0.54-0.67) and the
    best must reach the optimum (>= 0.95; all three stuck has a chance of about 1 in 1000).
    """
    kwargs = dict(reward="target_word", reward_kwargs={"target": "great"}, max_new_tokens=4, render_mode=None)
    eval_env = lm_gym.TextGenEnv(**kwargs)
    results = []
    for seed in range(3):
        env = make_vec_env("TextGen-v0", n_envs=8, seed=seed, env_kwargs=kwargs)
        # One full-batch minibatch per epoch (8 x 32 steps): the steadiest of the recipes measured.
        model = PPO(LMActorCriticPolicy, env, n_steps=32, batch_size=256, n_epochs=4, learning_rate=1e-3, gamma=1.0,
                    seed=seed, device="cpu")
        before = held_out_reward(model, eval_env)
        model.learn(8192)
        results.append((before, held_out_reward(model, eval_env)))
    assert all(before < 0.1 for before, _ in results), results  # the bundled LM rarely writes only "great"
    assert all(after >= 0.3 for _, after in results), results
    assert max(after for _, after in results) >= 0.95, results


def test_kl_penalty_keeps_the_policy_closer_to_the_initial_lm():
    kwargs = dict(reward="target_word", max_new_tokens=4, render_mode=None)
    results = {}
    for coef in (0.0, 1.0):
        env = make_vec_env("TextGen-v0", n_envs=4, seed=0, env_kwargs=kwargs)
        model = PPO(LMActorCriticPolicy, env, n_steps=32, batch_size=64, n_epochs=4, learning_rate=3e-4,
                    gamma=1.0, seed=0, device="cpu")
        callback = KLPenaltyCallback(coef=coef)
        model.learn(2048, callback=callback)
        torch.manual_seed(0)
        episodes = sample_episodes(model.policy, lm_gym.TextGenEnv(**kwargs), HELD_OUT, 8, reference=callback.reference)
        results[coef] = summarize(episodes)["kl_mean"]
    assert results[1.0] < 0.5 * results[0.0], results


@pytest.mark.parametrize("env_id, steps, samples, gain", [
    ("TextGen-Calculator-v0", 8192, 8, 0.1),  # measured +0.21 (0.31 -> 0.52)
    ("TextGen-GridWorld-v0", 8192, 8, 0.06),  # measured +0.13 (0.32 -> 0.46)
    ("TextGen-GuessNumber-v1", 32768, 8, 0.1),  # measured +0.21 (0.28 -> 0.48)
])
def test_ppo_raises_each_multi_turn_tasks_held_out_score(env_id, steps, samples, gain):
    """`lm-gym train`'s path with the task's own defaults, on a short budget: PPO's held-out score rises by
    ``gain`` (about half the gain measured on this 2-core CPU; the README's task suite has the full budgets)."""
    config = TrainConfig(env=env_id, steps=steps, eval_samples=samples, seed=0)
    result = run_one(config, every=steps, initial=True)
    before, after = result["initial"]["reward_mean"], result["final"]["reward_mean"]
    assert after - before >= gain, (before, after)
