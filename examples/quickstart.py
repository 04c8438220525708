"""The README snippet: PPO steers the bundled tiny LM toward positive reviews, then back to Hugging Face.

    python examples/quickstart.py [--steps 4096] [--out quickstart-lm]
"""

import argparse

import gymnasium as gym
from stable_baselines3 import PPO
from transformers import pipeline

import lm_gym  # registers "TextGen-v0"
from agents import EpisodeRolloutBuffer, KLPenaltyCallback, LMActorCriticPolicy

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=4096)
parser.add_argument("--out", default="quickstart-lm")
args = parser.parse_args()

env = gym.make("TextGen-v0")  # the bundled offline default task
model = PPO(LMActorCriticPolicy, env, learning_rate=1e-4, gamma=1.0, verbose=1,  # policy_kwargs={"model": ...}
            rollout_buffer_class=EpisodeRolloutBuffer)
model.learn(total_timesteps=args.steps, callback=KLPenaltyCallback(coef=0.05), progress_bar=True)

obs, info = env.reset(seed=0)
action, _ = model.predict(obs, deterministic=True)
print(f"prompt {info['prompt']!r} -> next token {env.unwrapped.tokenizer.decode(action)!r}")

model.policy.save_pretrained(args.out)  # a Hugging Face checkpoint: LM + tokenizer
generator = pipeline("text-generation", model=args.out)
print(generator("the movie was", max_new_tokens=12, do_sample=True)[0]["generated_text"])
