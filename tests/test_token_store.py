"""The token store (EpisodeRolloutBuffer, MaskableEpisodeRolloutBuffer) and the packed update give the numbers of
SB3's own window buffers on the same rollout, at O(tokens) memory."""

import warnings

import numpy as np
import pytest
import torch
from sb3_contrib import MaskablePPO
from sb3_contrib.common.maskable.buffers import MaskableDictRolloutBuffer
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import DictRolloutBuffer

import lm_gym
from agents import EpisodeRolloutBuffer, KLPenaltyCallback, LMActorCriticPolicy, MaskableEpisodeRolloutBuffer
from agents.lm.packing import pack, packs_sequences, row_layout, windows
from agents.sb3.rollout_log_probs import policy_log_probs
from test_multiturn import SayWord

SINGLE_TURN = dict(prompts=["the movie was", "i thought the acting", "honestly , the plot"], max_new_tokens=6)
MULTI_TURN = dict(text_env=SayWord, max_tokens=48, max_turn_tokens=4)
CASES = {  # (env kwargs, n_steps): rollouts that cut episodes at both edges, ends at EOS and at the budget
    "single-turn": (SINGLE_TURN, 10),
    "multi-turn replies": (MULTI_TURN, 14),
    "groups": ({**SINGLE_TURN, "group_size": 2}, 12),
}


def collected(buffer_class, env_kwargs, n_steps, algorithm=PPO, policy_kwargs=None):
    env = lm_gym.make_vec_env(4, seed=0, **env_kwargs)
    model = algorithm(LMActorCriticPolicy, env, n_steps=n_steps, batch_size=8, n_epochs=1, seed=0, device="cpu",
                      rollout_buffer_class=buffer_class, policy_kwargs=policy_kwargs or {})
    torch.manual_seed(0)  # the same sampling stream for both buffers
    model.policy.set_training_mode(False)
    model._setup_learn(total_timesteps=n_steps * 4)
    model.collect_rollouts(model.env, model._init_callback(None), model.rollout_buffer, n_steps)
    return model


def both(env_kwargs, n_steps, **kwargs):
    """The same rollout, collected into SB3's window buffer and into the token store."""
    stock_class, ours_class = ((MaskableDictRolloutBuffer, MaskableEpisodeRolloutBuffer)
                               if kwargs.get("algorithm") is MaskablePPO else (DictRolloutBuffer, EpisodeRolloutBuffer))
    return collected(stock_class, env_kwargs, n_steps, **kwargs), collected(ours_class, env_kwargs, n_steps, **kwargs)


def update_terms(policy, batch, masks):
    """PPO's per-minibatch numbers: values, log-probs, entropies, ratios, the loss and its gradients."""
    values, log_prob, entropy = policy.evaluate_actions(batch.observations, batch.actions.long().flatten(), masks)
    ratio = torch.exp(log_prob - batch.old_log_prob)
    advantages = batch.advantages
    policy_loss = -torch.min(advantages * ratio, advantages * ratio.clamp(0.8, 1.2)).mean()
    loss = policy_loss + 0.5 * torch.nn.functional.mse_loss(batch.returns, values.flatten()) - 0.01 * entropy.mean()
    grads = torch.autograd.grad(loss, [p for p in policy.parameters() if p.requires_grad])
    return [values, log_prob, entropy, ratio, loss, *grads]


@pytest.mark.parametrize("case", list(CASES))
def test_token_store_gives_the_window_buffers_numbers(case):
    stock, ours = both(*CASES[case])
    a, b = stock.rollout_buffer, ours.rollout_buffer
    for name in ("actions", "rewards", "episode_starts", "values", "log_probs", "advantages", "returns"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    for key in ("input_ids", "attention_mask"):  # every step's window, rebuilt from the tokens
        np.testing.assert_array_equal(a.observations[key], b.observations[key], err_msg=key)
    assert np.asarray(b.episode_starts).any(), "episodes end inside the rollout"
    # KL shaping's reference log-probs and the log-prob recompute read the store's packed episodes.
    kl = [KLPenaltyCallback(), KLPenaltyCallback()]
    for callback, model in zip(kl, (stock, ours)):
        callback.init_callback(model)
        callback.on_training_start(locals(), globals())
    torch.testing.assert_close(kl[1].reference_log_probs(b), kl[0].reference_log_probs(a), atol=1e-5, rtol=1e-5)
    for masked in (True, False):
        torch.testing.assert_close(policy_log_probs(ours.policy, b, masked), policy_log_probs(stock.policy, a, masked),
                                   atol=1e-5, rtol=1e-5)
    # The update: each of the store's minibatches against the same steps' windows from SB3's buffer.
    ours.policy.set_training_mode(True)
    batches = b.plan_minibatches(16)
    list(a.get(16))  # flatten SB3's buffer the way the update does
    for indices, batch in zip(batches, b.get(16)):
        window_batch = a._get_samples(indices)
        for x, y in zip(update_terms(ours.policy, batch, None), update_terms(ours.policy, window_batch, None)):
            torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-4)


def test_maskable_store_keeps_static_masks_once_and_nlpo_updates_see_the_rollouts_masks():
    kwargs = dict(algorithm=MaskablePPO, policy_kwargs={"top_p_mask": 0.5})
    stock, ours = both({**SINGLE_TURN, "banned_tokens": ["Ġbad", "Ġawful"]}, 10, **kwargs)
    a, b = stock.rollout_buffer, ours.rollout_buffer
    np.testing.assert_array_equal(a.action_masks.astype(bool), b.action_masks)
    assert [(allows, len(ids)) for allows, ids in b.distinct_masks] == [(False, 0), (False, 2)]  # the ban, once
    assert b.store_bytes() - EpisodeRolloutBuffer.store_bytes(b) == 4 * b.buffer_size * b.n_envs + 4 * 2
    torch.testing.assert_close(policy_log_probs(ours.policy, b), policy_log_probs(stock.policy, a), atol=1e-5,
                               rtol=1e-5)
    for batch in b.get(16):  # NLPO's nucleus, recomputed on packed episodes: the PPO ratio is 1
        with torch.no_grad():
            _, log_prob, _ = ours.policy.evaluate_actions(batch.observations, batch.actions.long().flatten(),
                                                          batch.action_masks)
        torch.testing.assert_close(log_prob, batch.old_log_prob, atol=1e-4, rtol=1e-4)


def test_store_is_o_tokens_and_windows_are_o_tokens_squared():
    env_kwargs = dict(prompts=["the movie was"], max_new_tokens=60, stop_tokens=[])  # 60-token episodes, no EOS
    stock, ours = both(env_kwargs, 60)
    steps = 60 * 4
    prompt = ours.rollout_buffer.lengths[0, 0]
    assert ours.rollout_buffer.store_bytes() <= steps * 44 + 4 * 4 * prompt  # 44 B/step + each prompt once
    windows_bytes = sum(v.nbytes for v in stock.rollout_buffer.observations.values())
    assert windows_bytes == steps * 16 * stock.observation_space["input_ids"].shape[0]
    assert ours.rollout_buffer.store_bytes() * 10 < windows_bytes


def test_packed_rows_hold_several_episodes_and_equal_one_forward_each():
    policy = collected(EpisodeRolloutBuffer, SINGLE_TURN, 10).policy
    assert packs_sequences(policy.lm)
    assert row_layout([5, 3, 2, 4, 1], many=True) == ([0, 2, 2, 1, 1], [0, 0, 3, 0, 4], 5)  # longest first
    assert row_layout([5, 3], many=False) == ([0, 1], [0, 0], 5)
    generator = torch.Generator().manual_seed(0)
    sequences = [torch.randint(1, 500, (n,), generator=generator) for n in (9, 4, 5, 2, 9, 1)]
    step_sequence = torch.tensor([0, 0, 1, 2, 3, 4, 5, 2, 4])
    step_length = torch.tensor([3, 9, 4, 5, 2, 6, 1, 1, 9])
    packed = pack(sequences, step_sequence, step_length)
    rows = []
    hook = policy.lm.register_forward_hook(lambda m, a, kw, out: rows.append(kw["input_ids"].shape), with_kwargs=True)
    with torch.no_grad():
        packed_logits, packed_values = policy.logits_and_values(packed)
        window_logits, window_values = policy.logits_and_values(windows(packed, 16))
    hook.remove()
    assert rows[0] == (4, 9)  # six sequences, 30 tokens, in four rows of nine (one per sequence: six)
    torch.testing.assert_close(packed_logits, window_logits, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(packed_values, window_values, atol=1e-5, rtol=1e-4)


def test_token_store_refuses_observations_that_are_not_left_padded():
    env = lm_gym.TextGenEnv()
    buffer = EpisodeRolloutBuffer(4, env.observation_space, env.action_space, device="cpu", n_envs=1)
    obs, _ = env.reset(seed=0)
    obs = {key: value[None].copy() for key, value in obs.items()}
    obs["attention_mask"][0, -2] = 0  # a hole between real tokens
    with pytest.raises(ValueError, match="left-padded"):
        buffer.add(obs, np.zeros(1), np.zeros(1), np.ones(1), torch.zeros(1), torch.zeros(1))


def test_sb3s_window_buffer_warns_past_a_quarter_of_memory_and_is_refused_past_all_of_it(monkeypatch):
    from agents.sb3 import store_cost

    env = lm_gym.make_vec_env(4, seed=0, **SINGLE_TURN)
    window = env.observation_space["input_ids"].shape[0]
    needed = 2 * 64 * 4 * window * 16  # ids and mask, int64, and get()'s copy
    make = lambda buffer_class: PPO(LMActorCriticPolicy, env, n_steps=64, device="cpu", rollout_buffer_class=buffer_class)
    monkeypatch.setattr(store_cost, "machine_memory", lambda: 2 * needed)
    with pytest.warns(UserWarning, match=rf"needs .* GiB .*rollout_buffer_class=EpisodeRolloutBuffer"):
        make(DictRolloutBuffer)
    monkeypatch.setattr(store_cost, "machine_memory", lambda: needed - 1)
    with pytest.raises(MemoryError, match="DictRolloutBuffer keeps a whole observation window per step"):
        make(DictRolloutBuffer)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make(EpisodeRolloutBuffer)  # keeps tokens: nothing to say
    monkeypatch.setattr(store_cost, "machine_memory", lambda: 8 * needed)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make(DictRolloutBuffer)  # an eighth of the machine: fine
