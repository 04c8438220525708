"""A multi-turn text env of your own in a few lines, trained token by token with stock SB3 PPO.

    python examples/custom_text_env.py [--steps 2048]
"""

import argparse

import lm_gym
from agents import make_algorithm, sample_episodes


class Countdown:
    """Any object with reset(seed) and step(text) (GEM's API) is a text env."""

    def reset(self, seed=None):
        self.left = 3
        return "say something nice", {}

    def step(self, text):  # the agent's turn, decoded from its own tokens
        self.left -= 1
        reward = float("great" in text)  # this turn's reward, paid on the turn's last token
        return f"{self.left} to go", reward, self.left == 0, False, {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2048)
    args = parser.parse_args()
    venv = lm_gym.make_vec_env(8, seed=0, text_env=Countdown, max_tokens=48, max_turn_tokens=4)  # MultiTurnVecEnv
    model = make_algorithm("ppo", venv, seed=0)  # stock SB3 PPO, the same policy as single-turn
    model.learn(args.steps)
    env = lm_gym.MultiTurnEnv(Countdown, max_tokens=48, max_turn_tokens=4)  # or gym.make("TextGen-MultiTurn-v0", ...)
    (episode,) = sample_episodes(model.policy, env, [{"text_env_seed": 0}])
    print(f"trained {args.steps} steps; one episode (return {episode.reward:.0f}, {episode.num_tokens} agent tokens):")
    print(episode.prompt)
    print(episode.completion)


if __name__ == "__main__":
    main()
