"""Plug in your own reward: a plain function, a batched Reward, or a registered name.

    python examples/custom_reward.py
"""

import gymnasium as gym
from stable_baselines3 import PPO

import lm_gym
from agents import LMActorCriticPolicy


def exclamation_reward(prompt: str, completion: str) -> float:
    """Per-sample: any callable f(prompt, completion) -> float works."""
    return min(completion.count("!"), 3) / 3


class ShortAndPositive(lm_gym.Reward):
    """Batched: scores a list of completions in one call (the place for a neural reward model)."""

    name = "short_and_positive"

    def __init__(self, max_words: int = 6):
        self.sentiment = lm_gym.SentimentReward()
        self.max_words = max_words

    def __call__(self, prompts, completions, references):
        sentiment = self.sentiment(prompts, completions, references)
        return [s - 0.1 * max(0, len(c.split()) - self.max_words) for s, c in zip(sentiment, completions)]


lm_gym.register_reward("short_and_positive", ShortAndPositive)

for reward in (exclamation_reward, ShortAndPositive(max_words=4), "short_and_positive"):
    env = gym.make("TextGen-v0", reward=reward, max_new_tokens=8)
    model = PPO(LMActorCriticPolicy, env, n_steps=64, batch_size=64, gamma=1.0)
    model.learn(total_timesteps=128)
    print(reward, "trained; last episode reward:", model.ep_info_buffer[-1]["r"] if model.ep_info_buffer else None)
