"""Every algorithm trains the bundled LM on TextGen-v0 through its stock SB3 / sb3-contrib class."""

import json
import re

import numpy as np
import pytest
import torch
from sb3_contrib import MaskablePPO

import lm_gym
from agents import EpisodeRolloutBuffer, GroupAdvantageCallback, LMActorCriticPolicy, MaskableEpisodeRolloutBuffer, \
    sample_episodes, summarize
from agents.sb3.algorithms import ALGORITHMS, make_algorithm
from agents.runs.cli import main

SMALL = {  # a few updates each, on short episodes
    "ppo": dict(n_steps=16, batch_size=32), "a2c": dict(n_steps=8), "maskable_ppo": dict(n_steps=16, batch_size=32),
    "trpo": dict(n_steps=16, batch_size=32), "dqn": dict(learning_starts=16, batch_size=16),
    "qrdqn": dict(learning_starts=16, batch_size=16),
    **{name: dict(n_steps=16, batch_size=32) for name in ("grpo", "dr_grpo", "rloo", "reinforce")},
}


@pytest.mark.parametrize("algo", sorted(ALGORITHMS))
def test_trains_through_its_stock_class_and_round_trips_save_load(algo, tmp_path):
    spec = ALGORITHMS[algo]
    env = lm_gym.make_vec_env(2, seed=0, group_size=min(spec.group_size, 2), max_new_tokens=4)
    model = make_algorithm(algo, env, seed=0, device="cpu", **SMALL[algo])
    assert type(model) is spec.cls
    # The critic-free ones are stock PPO plus the callback that sets their advantages.
    callbacks = lambda: [GroupAdvantageCallback(spec.advantage)] if spec.advantage else []  # noqa: E731
    weights = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(96, callback=callbacks())
    assert any(not torch.equal(w, p) for w, p in zip(weights, model.policy.parameters())), "nothing was trained"
    obs = env.reset()
    predict = {"action_masks": np.stack(env.env_method("action_masks"))} if algo == "maskable_ppo" else {}
    before = model.predict(obs, deterministic=True, **predict)[0]
    model.save(tmp_path / "model.zip")
    loaded = ALGORITHMS[algo].cls.load(tmp_path / "model.zip", env=env, device="cpu")
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True, **predict)[0], before)
    loaded.learn(32, reset_num_timesteps=False, callback=callbacks())  # training continues
    assert model.policy.save_pretrained(tmp_path / "lm").joinpath("model.safetensors").exists()


@pytest.mark.parametrize("algo, steps, learning_rate", [("a2c", 4096, 3e-4), ("maskable_ppo", 4096, 3e-4),
                                                         ("trpo", 2048, None)])
def test_reward_of_the_known_optimum_task_moves(algo, steps, learning_rate):
    """PPO has its own learning test; DQN and QR-DQN do not move this sparse task within a CPU budget.

    Margins measured over seeds 0-9 at one thread: gains of at least +0.13 (a2c), +0.33 (maskable_ppo) and
    +0.23 (trpo) against the +0.08 asserted.
    """
    kwargs = dict(reward="target_word", max_new_tokens=4)
    model = make_algorithm(algo, lm_gym.make_vec_env(4, seed=0, **kwargs), seed=0, device="cpu",
                           learning_rate=learning_rate)
    eval_env = lm_gym.TextGenEnv(**kwargs)
    held_out = [p.text for p in lm_gym.load_prompts(lm_gym.HELDOUT_PROMPTS)]

    def reward():
        torch.manual_seed(0)
        return summarize(sample_episodes(model.policy, eval_env, held_out, 8))["reward_mean"]

    before = reward()
    model.learn(steps)
    after = reward()
    assert after > before + 0.08, (before, after)


def test_env_action_masks_allow_and_ban_tokens_but_never_stop_tokens(bundled_tokenizer):
    great, bad = (bundled_tokenizer.convert_tokens_to_ids(t) for t in ("Ġgreat", "Ġbad"))
    eos = bundled_tokenizer.eos_token_id
    env = lm_gym.TextGenEnv()
    assert env.action_masks().dtype == bool and env.action_masks().all()
    masks = lm_gym.TextGenEnv(allowed_tokens=["Ġgreat", "."]).action_masks()
    assert masks.sum() == 3 and masks[great] and masks[eos]  # "." + "Ġgreat" + EOS
    masks = lm_gym.TextGenEnv(banned_tokens=["Ġbad", eos]).action_masks()
    assert not masks[bad] and masks[eos] and masks.sum() == len(masks) - 1
    with pytest.raises(ValueError, match="allowed_tokens: 'Ġgreatest'"):
        lm_gym.TextGenEnv(allowed_tokens=["Ġgreatest"])
    with pytest.raises(ValueError, match="not both"):
        lm_gym.TextGenEnv(allowed_tokens=["Ġgreat"], banned_tokens=["Ġbad"])


def make_maskable(top_p=0.5, interval=2, **env_kwargs):
    env = lm_gym.make_vec_env(4, seed=0, max_new_tokens=5, **env_kwargs)
    return MaskablePPO(LMActorCriticPolicy, env, n_steps=20, batch_size=40, n_epochs=1, seed=0, device="cpu",
                       rollout_buffer_class=MaskableEpisodeRolloutBuffer,
                       policy_kwargs={"top_p_mask": top_p, "mask_update_interval": interval})


def test_nlpo_rollouts_only_sample_the_nucleus_and_updates_see_the_same_masks():
    model = make_maskable(banned_tokens=["Ġbad"])
    model.learn(80)  # one rollout and one update
    buffer = model.rollout_buffer
    assert buffer.action_masks.dtype == bool
    obs = buffer.packed_observations(np.arange(buffer.buffer_size * buffer.n_envs))  # every step, env-major
    actions = torch.as_tensor(buffer.actions).long().flatten()  # flattened (env-major) by the update
    # The env's stored masks exclude "Ġbad"; the nucleus excludes most of the vocabulary.
    bad = model.env.get_attr("tokenizer")[0].convert_tokens_to_ids("Ġbad")
    assert not buffer.action_masks[..., bad].any()
    with torch.no_grad():
        nucleus = model.policy.nlpo(obs, model.action_space.n, cached=False)
    assert nucleus[torch.arange(len(actions)), actions].all()  # every sampled token was in the nucleus
    assert nucleus.float().mean() < 0.2 and nucleus[:, 0].all()  # small nucleus; EOS (id 0) always allowed


def test_nlpo_update_recomputes_the_rollout_masks_exactly():
    model = make_maskable(interval=100)
    model.policy.set_training_mode(False)
    model._setup_learn(80)
    model.collect_rollouts(model.env, model._init_callback(None), model.rollout_buffer, model.n_steps)
    batch = next(model.rollout_buffer.get(batch_size=None))
    with torch.no_grad():
        _, log_prob, _ = model.policy.evaluate_actions(batch.observations, batch.actions.flatten(), batch.action_masks)
    torch.testing.assert_close(log_prob, batch.old_log_prob, atol=1e-4, rtol=1e-4)  # PPO ratio is 1


def test_nlpo_copy_refreshes_every_interval_updates():
    model = make_maskable(interval=2)
    mask_lm, lm = model.policy.nlpo.lm, model.policy.lm
    same = lambda: all(torch.equal(a, b) for a, b in zip(mask_lm.parameters(), lm.parameters()))
    model.learn(80)  # 1 update: the copy is still the initial LM
    assert not same()
    model.learn(80, reset_num_timesteps=False)  # 2 updates: refreshed after the second
    model.policy.set_training_mode(False)
    assert same()
    assert "nlpo" not in dict(model.policy.named_children())  # TRPO and the optimizer never see it


def test_mask_buffer_keeps_a_mask_id_per_step_where_sb3_contrib_keeps_the_vocabulary_in_float32():
    from sb3_contrib.common.maskable.buffers import MaskableDictRolloutBuffer

    env = lm_gym.TextGenEnv()
    args = (64, env.observation_space, env.action_space)
    ours, stock = MaskableEpisodeRolloutBuffer(*args, n_envs=8), MaskableDictRolloutBuffer(*args, n_envs=8)
    assert ours.action_masks.dtype == bool and stock.action_masks.dtype == np.float32
    assert ours.store_bytes() - EpisodeRolloutBuffer.store_bytes(ours) == 64 * 8 * 4
    assert stock.action_masks.nbytes == 64 * 8 * env.action_space.n * 4


def test_compare_writes_curves_table_and_json(tmp_path, cli_error):
    main(["compare", "--algos", "ppo,dqn", "--seeds", "2", "--steps", "256", "--every", "64", "--n-envs", "2",
          "--eval-samples", "1", "--max-new-tokens", "4", "--env-kwargs", '{"stop_tokens": []}', "--out", str(tmp_path)])
    (run,) = tmp_path.iterdir()
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (run / "results.md").read_text().splitlines()
    assert table[0].startswith("| algorithm | reward")
    assert [line.split("|")[1].strip() for line in table[2:]] == ["ppo", "dqn"]
    data = json.loads((run / "results.json").read_text())
    assert data["config"]["env_options"] == {"stop_tokens": []} and data["seeds"] == 2
    for algo in ("ppo", "dqn"):
        assert len(data["results"][algo]) == 2
        curve = data["results"][algo][0]["curve"]
        assert len(curve) >= 2 and all(len(point) == 3 for point in curve)
        assert {"reward_mean", "kl_mean", "distinct_2"} <= set(data["results"][algo][0]["final"])
    assert re.search("unknown algorithm 'sac'; choose from .*rllib_ppo",
                     cli_error("compare", "--algos", "ppo,sac", "--out", str(tmp_path)))
