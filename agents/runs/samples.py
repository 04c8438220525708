"""Sampling completions from a policy through the env, with their reward and KL to a reference LM."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from agents.lm.kv_cache import RolloutKVCache
from lm_gym.env import TextGenEnv
from lm_gym.multiturn import MultiTurnEnv
from lm_gym.prompts import Prompt


@dataclass
class Episode:
    prompt: str
    completion: str
    reward: float  # the env's return (task reward only, no KL)
    kl: float  # sum over tokens of log p(token) - log q(token): a sample of KL(policy || reference)
    num_tokens: int
    reference_log_prob: float = 0.0  # sum over tokens of log q(token): the completion under the initial LM
    stopped: bool = False  # ended with a stop token (EOS), not at the token budget


@torch.no_grad()
def sample_episodes(
    policy: nn.Module,
    env: TextGenEnv | MultiTurnEnv,
    prompts: Sequence[str | Prompt | dict],
    samples_per_prompt: int = 1,
    reference: nn.Module | None = None,
    deterministic: bool = False,
    batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
) -> list[Episode]:
    """Run one episode per (prompt, sample), batching the policy call across all running episodes.

    ``policy``: anything with ``token_distribution(obs) -> Categorical``: every lm-gym policy of either
    backend (SB3's actor-critic and Q policies, RLlib's module); where it also has ``token_distributions``,
    tokens come from the first and the KL from the second (the unmasked policy under NLPO masks).
    ``env``: a :class:`lm_gym.TextGenEnv` or :class:`lm_gym.MultiTurnEnv` (copied per episode). ``prompts``: texts,
    :class:`lm_gym.Prompt` records whose references the reward needs (``exact_match``, ``rouge``, ``bleu``), or
    reset options as dicts (a multi-turn task's instances: ``{"text_env_seed": s}``). A multi-turn episode's
    ``completion`` is its conversation after the first message, its ``num_tokens`` the agent's tokens.
    ``progress(n)`` is called with the number of episodes finished so far, after every batch.
    """
    base = env.unwrapped
    # Policies with a KV cache see every row of a batch at every step (an ended episode's row unchanged, which the
    # cache holds), so each step feeds only the new tokens; the others see the running rows.
    sample = getattr(policy, "token_distributions", None) or policy.token_distribution
    cached = "cached" in inspect.signature(sample).parameters
    jobs = [prompt for prompt in prompts for _ in range(samples_per_prompt)]
    episodes: list[Episode] = []
    policy.set_training_mode(False) if hasattr(policy, "set_training_mode") else policy.eval()
    policy_device = next(policy.parameters()).device
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        # Shallow copies share the tokenizer, reward and prompt list; reset() gives each its own episode state.
        envs = [copy.copy(base) for _ in chunk]
        resets = [e.reset(options=_reset_options(prompt)) for e, prompt in zip(envs, chunk)]
        obs = [o for o, _ in resets]
        seen = [info["prompt"] for _, info in resets]  # what the LM saw (truncate_prompts may cut it)
        returns, kls, done = np.zeros(len(chunk)), np.zeros(len(chunk)), np.zeros(len(chunk), dtype=bool)
        ref_totals = np.zeros(len(chunk))
        reference_cache = RolloutKVCache()  # the reference is frozen: its cache never goes stale
        while not done.all():
            active = np.flatnonzero(~done)
            rows = np.arange(len(chunk)) if cached else active
            batch = {k: torch.as_tensor(np.stack([obs[i][k] for i in rows]), device=policy_device) for k in obs[0]}
            out = sample(batch, cached=True) if cached else sample(batch)
            distribution, plain = out if isinstance(out, tuple) else (out, out)  # the KL is on the unmasked policy
            running = torch.as_tensor(~done[rows], device=distribution.logits.device)
            distribution = torch.distributions.Categorical(logits=distribution.logits[running])
            actions = distribution.probs.argmax(-1) if deterministic else distribution.sample()
            if reference is not None:
                ref_logits, _ = reference_cache(reference, batch, policy.action_space.n, weights_version=0, hidden=False)
                ref_log_probs = ref_logits[running].log_softmax(-1).gather(1, actions.view(-1, 1)).squeeze(1)
                plain_log_probs = torch.distributions.Categorical(logits=plain.logits[running]).log_prob(actions)
                kls[active] += (plain_log_probs - ref_log_probs).cpu().numpy()
                ref_totals[active] += ref_log_probs.cpu().numpy()
            for i, action in zip(active, actions.cpu().numpy()):
                obs[i], reward, terminated, truncated, _ = envs[i].step(action)
                returns[i] += reward
                done[i] = terminated or truncated
        for i, e in enumerate(envs):
            episodes.append(Episode(seen[i], e.completion, float(returns[i]), float(kls[i]), e.num_new_tokens,
                                    float(ref_totals[i]), e.stopped))
        if progress is not None:
            progress(len(episodes))
    return episodes


def _reset_options(prompt: str | Prompt | dict) -> dict:
    if isinstance(prompt, dict):  # reset options as they are: a multi-turn task instance, {"text_env_seed": s}
        return prompt
    if isinstance(prompt, Prompt):
        return {"prompt": prompt.text, "references": prompt.references}
    return {"prompt": prompt}


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct-n (Li et al., 2016): unique word n-grams / all word n-grams over ``texts``."""
    grams = [tuple(words[i : i + n]) for words in (t.split() for t in texts) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def summarize(episodes: Sequence[Episode]) -> dict[str, float]:
    """Reward mean/std, KL to the reference, perplexity under it, length, EOS rate and distinct-1/2."""
    rewards = np.array([e.reward for e in episodes])
    completions = [e.completion for e in episodes]
    tokens = sum(e.num_tokens for e in episodes)
    return {
        "reward_mean": float(rewards.mean()),
        "reward_std": float(rewards.std()),
        "kl_mean": float(np.mean([e.kl for e in episodes])),
        # Perplexity of the generated tokens under the initial LM (the reference): fluency by its standard.
        "perplexity": float(np.exp(-sum(e.reference_log_prob for e in episodes) / tokens)) if tokens else float("nan"),
        "length_mean": float(np.mean([e.num_tokens for e in episodes])),
        "eos_rate": float(np.mean([e.stopped for e in episodes])),
        "distinct_1": distinct_n(completions, 1),
        "distinct_2": distinct_n(completions, 2),
        "episodes": len(episodes),
    }


def episodes_to_dicts(episodes: Sequence[Episode]) -> list[dict]:
    return [asdict(e) for e in episodes]
