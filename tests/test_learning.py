"""Learning tests: stock PPO measurably moves a reward whose optimum is known."""

import torch
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

import lm_gym
from agents import KLPenaltyCallback, LMActorCriticPolicy, sample_episodes, summarize

HELD_OUT = [p.text for p in lm_gym.load_prompts(lm_gym.HELDOUT_PROMPTS)]


def held_out_reward(model, env):
    torch.manual_seed(0)
    return summarize(sample_episodes(model.policy, env, HELD_OUT, samples_per_prompt=8))["reward_mean"]


def test_ppo_learns_the_target_word_task_toward_its_optimum():
    kwargs = dict(reward="target_word", reward_kwargs={"target": "great"}, max_new_tokens=4, render_mode=None)
    env = make_vec_env("TextGen-v0", n_envs=4, seed=0, env_kwargs=kwargs)
    model = PPO(LMActorCriticPolicy, env, n_steps=32, batch_size=64, n_epochs=4, learning_rate=3e-4, gamma=1.0,
                seed=0, device="cpu")
    eval_env = lm_gym.TextGenEnv(**kwargs)
    before = held_out_reward(model, eval_env)
    model.learn(4096)
    after = held_out_reward(model, eval_env)
    assert before < 0.1  # the bundled LM rarely writes only "great"
    assert after > 0.8, (before, after)  # optimum is 1.0, on prompts never trained on


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
