"""The fast paths (KV-cached rollouts, one forward per episode, batched rewards) give the same numbers."""

import warnings

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import DictRolloutBuffer

import lm_gym
from agents import EpisodeRolloutBuffer, LMActorCriticPolicy, RolloutKVCache
from agents.lm import kv_cache
from agents.lm.forward import forward_plan, growth, next_token_logits

ENV_KWARGS = dict(prompts=["the movie was", "i thought the acting", "honestly , the plot"], max_new_tokens=6)


def make_ppo(policy_kwargs=None, n_envs=4, **kwargs):
    env = lm_gym.make_vec_env(n_envs=n_envs, seed=0, **ENV_KWARGS)
    kwargs = {"rollout_buffer_class": EpisodeRolloutBuffer, "n_steps": 24, "batch_size": 32, "n_epochs": 1, **kwargs}
    return PPO(LMActorCriticPolicy, env, seed=0, device="cpu", policy_kwargs=policy_kwargs or {}, **kwargs)


def collect(model):
    torch.manual_seed(0)  # the same sampling stream for every model collected
    model.policy.set_training_mode(False)
    model._setup_learn(total_timesteps=model.n_steps * model.n_envs)
    model.collect_rollouts(model.env, model._init_callback(None), model.rollout_buffer, model.n_steps)
    return model.rollout_buffer


def test_growth_detects_exactly_one_new_token():
    prev_ids = torch.tensor([[0, 0, 5, 6], [0, 0, 5, 6], [0, 0, 5, 6], [9, 8, 5, 6]])
    prev_mask = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 1, 1]])
    ids = torch.tensor([[0, 5, 6, 7], [0, 5, 9, 7], [0, 0, 5, 6], [8, 5, 6, 7]])
    mask = torch.tensor([[0, 1, 1, 1], [0, 1, 1, 1], [0, 0, 1, 1], [1, 1, 1, 1]])
    # grew by one | a middle token changed | unchanged | full window: the first token fell off
    assert growth(prev_ids, prev_mask, ids, mask).tolist() == [1, 0, 0, 0]


def test_kv_cached_rollout_equals_the_uncached_rollout():
    cached, uncached = make_ppo(), make_ppo({"use_kv_cache": False})
    a, b = collect(cached), collect(uncached)
    assert np.array_equal(a.actions, b.actions)
    np.testing.assert_allclose(a.log_probs, b.log_probs, atol=1e-4)
    np.testing.assert_allclose(a.values, b.values, atol=1e-4)
    assert a.episode_starts[1:].sum() >= 4  # episodes ended and restarted inside the rollout


def stack(rows):
    return {k: torch.as_tensor(np.stack([r[k] for r in rows])) for k in rows[0]}


def uncached(lm, obs, n):
    return next_token_logits(lm, obs, n, forward_plan(obs["input_ids"], obs["attention_mask"], share=False))


def test_kv_cache_runs_one_call_per_step_for_rows_that_grew_and_rows_that_restarted():
    lm = lm_gym.load_causal_lm().eval()
    envs = [lm_gym.TextGenEnv(**ENV_KWARGS) for _ in ENV_KWARGS["prompts"]]
    cache, n = RolloutKVCache(), envs[0].action_space.n
    cache(lm, stack([e.reset(options={"prompt": p})[0] for e, p in zip(envs, ENV_KWARGS["prompts"])]), n,
          weights_version=0)
    calls = []
    hook = lm.register_forward_hook(lambda m, args, kwargs, out: calls.append(tuple(kwargs["input_ids"].shape)),
                                    with_kwargs=True)
    stepped = stack([envs[0].step(7)[0], envs[1].reset(options={"prompt": "the ending"})[0], envs[2].step(9)[0]])
    logits, hidden = cache(lm, stepped, n, weights_version=0)
    restarted = int(stepped["attention_mask"][1].sum())  # the new episode runs its real tokens, not the padding
    assert calls == [(3, restarted)]  # one call: two rows add one token each, one row runs in full
    expected_logits, expected_hidden = uncached(lm, stepped, n)
    torch.testing.assert_close(logits, expected_logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(hidden, expected_hidden, atol=1e-4, rtol=1e-4)
    calls.clear()
    stepped = stack([e.step(3)[0] for e in envs])
    logits, _ = cache(lm, stepped, n, weights_version=0)
    assert calls == [(3, 1)]  # all rows continue on their cached keys
    torch.testing.assert_close(logits, uncached(lm, stepped, n)[0], atol=1e-4, rtol=1e-4)
    # Changed weights (a new version) drop the cache: every row runs in full.
    calls.clear()
    stepped = stack([e.step(4)[0] for e in envs])
    logits, _ = cache(lm, stepped, n, weights_version=1)
    hook.remove()
    assert calls == [(3, int(stepped["attention_mask"].sum(-1).max()))]
    torch.testing.assert_close(logits, uncached(lm, stepped, n)[0], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("merge_padding", [256, 0])  # steps with restarts as one call / as two calls
def test_kv_cache_stays_exact_across_compactions(merge_padding, monkeypatch):
    """Many restarts grow the cache past two windows again and again; every step still equals no cache."""
    monkeypatch.setattr(kv_cache, "MERGE_PADDING_CPU", merge_padding)
    lm = lm_gym.load_causal_lm().eval()
    kwargs = dict(ENV_KWARGS, max_new_tokens=12)
    envs = [lm_gym.TextGenEnv(**kwargs) for _ in range(4)]
    for i, e in enumerate(envs):
        e.reset(seed=i)
    rng, cache, n = np.random.default_rng(0), RolloutKVCache(), envs[0].action_space.n
    obs, widths = [e.reset()[0] for e in envs], []
    for step in range(100):
        batch = stack(obs)
        torch.testing.assert_close(cache(lm, batch, n, weights_version=0)[0], uncached(lm, batch, n)[0],
                                   atol=1e-4, rtol=1e-4, msg=f"step {step}")
        widths.append(cache.key_mask.shape[1])
        obs = []
        for e in envs:
            o, _, terminated, _, _ = e.step(int(rng.integers(1, n)) if rng.random() > 0.15 else 0)
            obs.append(e.reset()[0] if terminated else o)
    compactions = sum(1 for before, after in zip(widths, widths[1:]) if after < before)
    assert compactions >= 3 and max(widths) <= 3 * envs[0].window  # dead columns are dropped again and again


def test_policy_drops_its_cache_when_the_weights_change():
    model = make_ppo()
    buffer = collect(model)
    obs = {k: torch.as_tensor(v[1]) for k, v in buffer.observations.items()}  # step 1 of every env
    with torch.no_grad():
        model.policy({k: torch.as_tensor(v[0]) for k, v in buffer.observations.items()})
        model.policy.value_head.bias.add_(1.0)  # not LM weights: the cache stays valid
        for p in model.policy.lm.parameters():
            p.mul_(1.01)
        _, values, log_prob = model.policy(obs, deterministic=True)
        model.policy.use_kv_cache = False
        _, expected_values, expected_log_prob = model.policy(obs, deterministic=True)
    torch.testing.assert_close(log_prob, expected_log_prob, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(values, expected_values, atol=1e-5, rtol=1e-5)


def test_episode_buffer_yields_whole_episodes_in_order():
    model = make_ppo()
    buffer = collect(model)
    starts = buffer.episode_starts.copy()
    batches = list(buffer.get(batch_size=32))
    assert sum(len(b.actions) for b in batches) == buffer.buffer_size * buffer.n_envs
    segments = buffer.episode_segments()
    assert sorted(np.concatenate(segments).tolist()) == list(range(buffer.buffer_size * buffer.n_envs))
    for segment in segments:
        env, steps = segment[0] // buffer.buffer_size, segment % buffer.buffer_size
        assert np.array_equal(steps, np.arange(steps[0], steps[0] + len(steps)))  # consecutive steps
        assert starts[steps[1:], env].sum() == 0  # no episode starts inside a segment
    assert all(len(b.actions) >= 32 for b in batches[:-1])


def token_sequences(obs):
    return [tuple(ids[mask.bool()].tolist()) for ids, mask in zip(obs["input_ids"], obs["attention_mask"])]


def distinct_longest_sequences(obs):
    """How many forwards prefix sharing needs, by definition: the distinct sequences that are no other's prefix."""
    sequences = set(token_sequences(obs))
    return sum(1 for s in sequences if not any(len(t) > len(s) and t[: len(s)] == s for t in sequences))


def test_shared_forward_update_equals_the_per_token_update():
    """SB3's shuffled single steps share forwards wherever a minibatch holds several steps of one episode (or
    identical prompts). (The episode buffers' packed minibatches: test_token_store.py.)"""
    max_forwards = 2 / 3
    model = make_ppo(rollout_buffer_class=DictRolloutBuffer)
    buffer = collect(model)
    batch = next(buffer.get(batch_size=48))
    obs, actions = batch.observations, batch.actions.long().flatten()
    rows_seen = []
    hook = model.policy.lm.register_forward_hook(
        lambda m, args, kwargs, out: rows_seen.append(kwargs["input_ids"].shape[0]), with_kwargs=True)
    results = {}
    for group in (True, False):
        model.policy.group_episodes = group
        values, log_prob, entropy = model.policy.evaluate_actions(obs, actions)
        ratio = torch.exp(log_prob - batch.old_log_prob)
        advantages = batch.advantages
        policy_loss = -torch.min(advantages * ratio, advantages * ratio.clamp(0.8, 1.2)).mean()
        loss = policy_loss + 0.5 * torch.nn.functional.mse_loss(batch.returns, values.flatten()) - 0.01 * entropy.mean()
        grads = torch.autograd.grad(loss, list(model.policy.parameters()))
        results[group] = (values, log_prob, entropy, loss, grads)
    hook.remove()
    assert rows_seen[1] == len(actions) and rows_seen[0] == distinct_longest_sequences(obs)
    assert rows_seen[0] < len(actions) * max_forwards
    for grouped, per_token in zip(results[True][:4], results[False][:4]):
        torch.testing.assert_close(grouped, per_token, atol=1e-5, rtol=1e-4)
    for g, p in zip(results[True][4], results[False][4]):
        torch.testing.assert_close(g, p, atol=1e-5, rtol=1e-3)
    torch.testing.assert_close(results[True][1], batch.old_log_prob, atol=1e-4, rtol=1e-4)  # = the rollout's


def test_update_warns_once_when_minibatches_are_single_steps_and_names_the_fix():
    for buffer_class, expected in ((DictRolloutBuffer, 1), (EpisodeRolloutBuffer, 0)):
        model = make_ppo(rollout_buffer_class=buffer_class, n_envs=8, n_epochs=2)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.learn(3 * 24 * 8)
        messages = [str(w.message) for w in caught if "EpisodeRolloutBuffer" in str(w.message)]
        assert len(messages) == expected, (buffer_class, messages)
        if expected:
            assert "rollout_buffer_class=EpisodeRolloutBuffer" in messages[0]


def test_batched_rewards_score_all_finished_episodes_in_one_call():
    calls = []

    class Recorder(lm_gym.Reward):
        name = "recorder"

        def __call__(self, prompts, completions, references):
            calls.append(len(completions))
            return [len(c) for c in completions]

    venv = lm_gym.make_vec_env(n_envs=3, seed=0, reward=Recorder(), prompts=["a b"], max_new_tokens=2)
    single = lm_gym.TextGenEnv(reward=lambda p, c: len(c), prompts=["a b"], max_new_tokens=2)
    venv.reset()
    single.reset(seed=0)
    for step in range(2):
        _, rewards, dones, infos = venv.step(np.array([5, 5, 5]))
        expected = single.step(5)[1]
    assert calls == [3] and dones.all() and rewards.tolist() == [expected] * 3
    assert "pending_reward" not in infos[0]
    with pytest.raises(ValueError, match="VecMonitor"):
        from stable_baselines3.common.env_util import make_vec_env

        lm_gym.BatchedRewardVecEnv(make_vec_env(lambda: lm_gym.TextGenEnv(prompts=["a"]), n_envs=2))


def test_dummy_vec_env_copies_share_prompts_and_reward_but_not_episodes():
    from stable_baselines3.common.vec_env import DummyVecEnv

    venv = lm_gym.make_vec_env(n_envs=3, seed=0, max_new_tokens=3, vec_env_cls=DummyVecEnv)
    envs = venv.venv.venv.envs  # VecMonitor > BatchedRewardVecEnv > DummyVecEnv
    assert len({id(e) for e in envs}) == 3
    assert all(e.prompt_ids is envs[0].prompt_ids and e.reward is envs[0].reward for e in envs)
    venv.reset()
    venv.step(np.array([5, 6, 7]))
    assert [e._new_ids for e in envs] == [[5], [6], [7]]
    assert [e.np_random.bit_generator.state == envs[0].np_random.bit_generator.state for e in envs] == [True, False, False]
    draws = [lm_gym.TextGenEnv(max_new_tokens=3).reset(seed=i)[1]["prompt"] for i in range(3)]
    assert [e._prompt.text for e in envs] == draws  # env i seeded with seed + i, as if built alone


def test_bf16_autocast_trains_without_nan():
    model = make_ppo({"autocast_dtype": "bfloat16"})
    model.learn(96)
    buffer = model.rollout_buffer
    assert np.isfinite(buffer.log_probs).all() and np.isfinite(buffer.values).all()
    assert all(torch.isfinite(p).all() for p in model.policy.parameters())
    with torch.no_grad():
        obs = {k: torch.as_tensor(v[0]) for k, v in collect(model).observations.items()}
        assert model.policy.get_distribution(obs).distribution.logits.dtype == torch.float32


def test_sampling_episodes_through_the_cache_equals_full_forwards_and_holds_ended_rows():
    """sample_episodes feeds every row at every step to a cached policy: rows of ended episodes are unchanged, and the
    cache holds them (no new columns, their last logits) while the others grow."""
    from agents import sample_episodes

    env = lm_gym.TextGenEnv(**ENV_KWARGS)
    policy = make_ppo().policy

    class Uncached:  # the same policy without the cached path: full forwards of the running rows
        action_space = policy.action_space

        def __init__(self):
            self.parameters, self.eval = policy.parameters, lambda: None

        def token_distributions(self, obs):
            return policy.token_distributions(obs)

    tokens = []
    hook = policy.lm.register_forward_hook(lambda m, a, kw, out: tokens.append(kw["input_ids"].numel()),
                                           with_kwargs=True)
    runs = {}
    for name, sampler in (("cached", policy), ("full", Uncached())):
        torch.manual_seed(0)
        tokens.clear()
        runs[name] = (sample_episodes(sampler, env, ENV_KWARGS["prompts"] * 4, 2), sum(tokens))
    hook.remove()
    (cached, cached_tokens), (full, full_tokens) = runs["cached"], runs["full"]
    assert [e.completion for e in cached] == [e.completion for e in full]
    np.testing.assert_allclose([e.reward for e in cached], [e.reward for e in full])
    assert len({len(e.completion) for e in cached}) > 1  # episodes ended at different steps
    assert cached_tokens < full_tokens / 2
