"""Multi-turn rollout cost: tokens/s at 1, 2, 4 and 8 turns of equal total length vs a single-turn rollout.

Every episode holds the same number of tokens after its first message (``--tokens``, default 64): a single-turn
TextGen-v0 episode generates all of them; a k-turn MultiTurnEnv episode splits them into k agent turns (ended by
the env at ``max_turn_tokens``, as a random-init LM never writes its EOS) and k - 1 env replies of the same length
in between. Both run through stock ``PPO.collect_rollouts`` on the recommended path (lm-gym's vector env, the
KV-cached policy), on the same LM shape, prompts and batch. Tokens/s counts agent and env tokens alike (what the
LM must process; the table also shows agent tokens/s, the env steps); a turn end costs one LM call over the reply
on top of the cached keys, never the history, so the rate should not fall as turns grow (target: every k >= 0.9x
of single-turn; replies enter in one call per turn, so more turns can even be faster per token). Medians of ``--repeats``, the
settings timed in turn within each repeat.

``--ends truncated``: the text env never ends an episode, ``max_turns`` truncates it (SB3 then bootstraps each one
with a value call on its terminal observation, one row, which must not drop the other envs' KV cache).

    python benchmarks/multiturn.py [--shape tiny-1k|gpt2-small] [--n-envs 8] [--tokens 64] [--repeats 5]
                                   [--ends terminated|truncated]
"""

from __future__ import annotations

import argparse
import statistics
import time

from stable_baselines3 import PPO

import lm_gym
from agents import EpisodeRolloutBuffer, LMActorCriticPolicy
from harness import SHAPES, collect_once, device, machine, model_path, prompts_of_length, synchronize

TURNS = (1, 2, 4, 8)


class FixedReplies:
    """A text env whose every reply is the same ``reply_tokens``-token text, for ``turns`` turns (``None``: it never
    ends the episode itself)."""

    def __init__(self, reply: str, turns: int | None):
        self.reply, self.turns, self.turn = reply, turns, 0

    def reset(self, seed=None):
        self.turn = 0
        return "", {}

    def step(self, text):
        self.turn += 1
        return self.reply, 0.0, self.turns is not None and self.turn >= self.turns, False, {}


def piece_of_length(n_tokens: int) -> str:
    """A text of exactly ``n_tokens`` bundled-tokenizer tokens (0: empty)."""
    return prompts_of_length(n_tokens, 1)[0] if n_tokens else ""


def build(shape: str, n_envs: int, prompt_tokens: int, tokens: int, turns: int | None, truncated: bool = False
          ) -> tuple[PPO, int, int]:
    """PPO on single-turn TextGen-v0 (``turns=None``) or on a ``turns``-turn MultiTurnEnv of the same total length
    (``truncated``: ended by ``max_turns``, not by the text env), the tokens per episode after the first message, and
    the agent's tokens (env steps) per episode."""
    model = model_path(shape)
    prompts = prompts_of_length(prompt_tokens, n_envs)
    if turns is None:
        venv = lm_gym.make_vec_env(n_envs, seed=0, model=model, prompts=prompts, max_new_tokens=tokens, stop_tokens=[])
        per_episode, steps = tokens, tokens
    else:
        # k agent turns of (a - 1) tokens + the env's end token, and k - 1 replies of a tokens: (2k - 1) a tokens.
        a = tokens // (2 * turns - 1)
        per_episode, steps = (2 * turns - 1) * a, turns * (a - 1)
        reply = piece_of_length(a)
        # A first message of prompt_tokens tokens (the plain template adds a newline: one token fewer of text).
        first = prompts[0]
        # Truncated at max_turns, the last reply is appended too: room for it (the window holds a whole turn after it).
        venv = lm_gym.make_vec_env(n_envs, seed=0, text_env=lambda: FixedReplies(reply, None if truncated else turns),
                                   model=model, max_turns=turns if truncated else None,
                                   max_tokens=prompt_tokens + 2 + per_episode + (2 * a if truncated else 0),
                                   max_turn_tokens=a - 1,
                                   turn_end_tokens=[], first_template=first + "{observation}", reply_template="{reply}")
    ppo = PPO(LMActorCriticPolicy, venv, n_steps=2 * steps, batch_size=4 * steps, n_epochs=1, seed=0, device=device(),
              policy_kwargs={"model": model}, rollout_buffer_class=EpisodeRolloutBuffer)
    ppo.policy.set_training_mode(False)
    return ppo, per_episode, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="tiny-1k", choices=sorted(SHAPES))
    parser.add_argument("--n-envs", type=int, default=8)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ends", choices=("terminated", "truncated"), default="terminated",
                        help="how multi-turn episodes end: the text env ends them, or max_turns truncates them")
    args = parser.parse_args()
    print(f"# multi-turn rollout: {args.shape}, {args.n_envs} envs, {args.prompt_tokens}-token first message + "
          f"{args.tokens} tokens per episode, episodes {args.ends}, {args.repeats} repeats; {machine()}")
    settings = {"single-turn": None, **{f"{k} turns": k for k in TURNS}}
    models = {name: build(args.shape, args.n_envs, args.prompt_tokens, args.tokens, k, args.ends == "truncated")
              for name, k in settings.items()}
    rates: dict[str, list[float]] = {name: [] for name in settings}
    agent_rates: dict[str, list[float]] = {name: [] for name in settings}
    episode_seconds: dict[str, list[float]] = {name: [] for name in settings}
    for model, _, _ in models.values():  # warm-up
        collect_once(model)
    for _ in range(args.repeats):
        for name, (model, per_episode, steps) in models.items():
            synchronize()
            start = time.perf_counter()
            collect_once(model)
            synchronize()
            seconds = time.perf_counter() - start
            episodes = model.n_steps * model.n_envs / steps
            rates[name].append(episodes * per_episode / seconds)
            agent_rates[name].append(model.n_steps * model.n_envs / seconds)
            episode_seconds[name].append(seconds / episodes)
    base = statistics.median(rates["single-turn"])
    print(f"{'setting':12s} {'tokens/s':>10s} {'agent tokens/s':>15s} {'ms/episode':>11s} {'vs single':>10s}")
    ratios = []
    for name in settings:
        rate = statistics.median(rates[name])
        ratios.append(f"{name} {rate / base:.2f}x")
        print(f"{name:12s} {rate:10.0f} {statistics.median(agent_rates[name]):15.0f} "
              f"{1e3 * statistics.median(episode_seconds[name]):11.2f} {rate / base:9.2f}x")
    print("multi-turn tokens/s / single-turn (target >= 0.9x, flat as turns grow): " + ", ".join(ratios[1:]))


if __name__ == "__main__":
    main()
