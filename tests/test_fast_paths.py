"""The fast paths (KV-cached rollouts, one forward per episode, batched rewards) give the same numbers."""

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO

import lm_gym
from agents import EpisodeRolloutBuffer, LMActorCriticPolicy, RolloutKVCache
from agents.lm_forward import continues, next_token_logits

ENV_KWARGS = dict(prompts=["the movie was", "i thought the acting", "honestly , the plot"], max_new_tokens=6)


def make_ppo(policy_kwargs=None, n_envs=4, **kwargs):
    env = lm_gym.make_vec_env(n_envs=n_envs, seed=0, **ENV_KWARGS)
    kwargs.setdefault("rollout_buffer_class", EpisodeRolloutBuffer)
    return PPO(LMActorCriticPolicy, env, n_steps=24, batch_size=32, n_epochs=1, seed=0, device="cpu",
               policy_kwargs=policy_kwargs or {}, **kwargs)


def collect(model):
    torch.manual_seed(0)  # the same sampling stream for every model collected
    model.policy.set_training_mode(False)
    model._setup_learn(total_timesteps=model.n_steps * model.n_envs)
    model.collect_rollouts(model.env, model._init_callback(None), model.rollout_buffer, model.n_steps)
    return model.rollout_buffer


def test_continues_detects_exactly_one_new_token():
    prev_ids = torch.tensor([[0, 0, 5, 6], [0, 0, 5, 6], [0, 0, 5, 6], [9, 8, 5, 6]])
    prev_mask = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 1, 1]])
    ids = torch.tensor([[0, 5, 6, 7], [0, 5, 9, 7], [0, 0, 5, 6], [8, 5, 6, 7]])
    mask = torch.tensor([[0, 1, 1, 1], [0, 1, 1, 1], [0, 0, 1, 1], [1, 1, 1, 1]])
    # grew by one | a middle token changed | unchanged | full window: the first token fell off
    assert continues(prev_ids, prev_mask, ids, mask).tolist() == [True, False, False, False]


def test_kv_cached_rollout_equals_the_uncached_rollout():
    cached, uncached = make_ppo(), make_ppo({"use_kv_cache": False})
    a, b = collect(cached), collect(uncached)
    assert np.array_equal(a.actions, b.actions)
    np.testing.assert_allclose(a.log_probs, b.log_probs, atol=1e-4)
    np.testing.assert_allclose(a.values, b.values, atol=1e-4)
    assert a.episode_starts[1:].sum() >= 4  # episodes ended and restarted inside the rollout


def test_kv_cache_reuses_rows_that_grew_and_recomputes_the_rest():
    lm = lm_gym.load_causal_lm().eval()
    env = lm_gym.TextGenEnv(**ENV_KWARGS)
    rows = [env.reset(options={"prompt": p})[0] for p in ENV_KWARGS["prompts"]]
    stack = lambda rows: {k: torch.as_tensor(np.stack([r[k] for r in rows])) for k in rows[0]}
    cache, n = RolloutKVCache(), env.action_space.n
    cache(lm, stack(rows), n, weights_version=0)
    envs = [lm_gym.TextGenEnv(**ENV_KWARGS) for _ in rows]
    for e, p in zip(envs, ENV_KWARGS["prompts"]):
        e.reset(options={"prompt": p})
    stepped = [envs[0].step(7)[0], envs[1].reset(options={"prompt": "the ending"})[0], envs[2].step(9)[0]]
    calls = []
    hook = lm.register_forward_hook(lambda m, args, kwargs, out: calls.append(kwargs["input_ids"].shape), with_kwargs=True)
    logits, hidden = cache(lm, stack(stepped), n, weights_version=0)
    hook.remove()
    assert sorted(calls) == sorted([(2, 1), (1, env.window)])  # two rows by one token, one row in full
    expected_logits, expected_hidden = next_token_logits(lm, stack(stepped), n, group=False)
    torch.testing.assert_close(logits, expected_logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(hidden, expected_hidden, atol=1e-4, rtol=1e-4)
    # Changed weights (a new version) drop the cache: everything is recomputed.
    calls.clear()
    hook = lm.register_forward_hook(lambda m, args, kwargs, out: calls.append(kwargs["input_ids"].shape), with_kwargs=True)
    cache(lm, stack([envs[0].step(3)[0], envs[1].step(3)[0], envs[2].step(3)[0]]), n, weights_version=1)
    hook.remove()
    assert calls == [(3, env.window)]


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


def test_grouped_update_equals_the_per_token_update():
    model = make_ppo()
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
    episodes = sum(1 for i in range(len(actions)) if i == len(actions) - 1 or not continues(
        obs["input_ids"][i : i + 1], obs["attention_mask"][i : i + 1], obs["input_ids"][i + 1 : i + 2],
        obs["attention_mask"][i + 1 : i + 2]).item())
    assert rows_seen == [episodes, len(actions)] and episodes < len(actions) / 3
    for grouped, per_token in zip(results[True][:4], results[False][:4]):
        torch.testing.assert_close(grouped, per_token, atol=1e-5, rtol=1e-4)
    for g, p in zip(results[True][4], results[False][4]):
        torch.testing.assert_close(g, p, atol=1e-5, rtol=1e-3)
    torch.testing.assert_close(results[True][1], batch.old_log_prob, atol=1e-4, rtol=1e-4)  # = the rollout's


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


def test_vec_envs_share_prompts_and_reward_but_not_episodes():
    venv = lm_gym.make_vec_env(n_envs=3, seed=0, max_new_tokens=3)
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
