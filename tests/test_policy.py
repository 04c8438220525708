import numpy as np
import pytest
import torch
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor
from transformers import AutoModelForCausalLM, pipeline

import lm_gym
from agents import LMActorCriticPolicy

PROMPTS = ["the movie was", "i thought the acting", "honestly , the plot", "the ending"]


def make_ppo(env=None, **kwargs):
    env = env or lm_gym.TextGenEnv(prompts=PROMPTS, max_new_tokens=4)
    kwargs.setdefault("n_steps", 32)
    kwargs.setdefault("batch_size", 16)
    return PPO(LMActorCriticPolicy, env, seed=0, device="cpu", **kwargs)


def batch_of_observations(env, n=4):
    """Observations of different lengths (and so different left padding), after a few random tokens."""
    rows = []
    for i in range(n):
        obs, _ = env.reset(options={"prompt": PROMPTS[i % len(PROMPTS)]})
        for _ in range(i % 3):
            obs = env.step(int(env.np_random.integers(2, env.action_space.n)))[0]
        rows.append(obs)
    return {k: torch.as_tensor(np.stack([r[k] for r in rows])) for k in rows[0]}


def test_log_probs_are_the_lm_softmax_of_the_unpadded_sequence():
    model = make_ppo()
    env = lm_gym.TextGenEnv(prompts=PROMPTS, max_new_tokens=4)
    obs = batch_of_observations(env)
    lm = AutoModelForCausalLM.from_pretrained(lm_gym.DEFAULT_MODEL).eval()
    n = env.action_space.n
    all_actions = torch.arange(n)
    for row in range(len(obs["input_ids"])):
        ids = obs["input_ids"][row][obs["attention_mask"][row].bool()]
        with torch.no_grad():
            expected = lm(ids[None]).logits[0, -1].log_softmax(-1)
            one = {k: v[row : row + 1].expand(n, -1) for k, v in obs.items()}
            _, log_prob, entropy = model.policy.evaluate_actions(one, all_actions)
        torch.testing.assert_close(log_prob, expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(entropy[0], -(expected.exp() * expected).sum(), atol=1e-5, rtol=1e-5)


def test_shapes_values_and_distribution():
    model = make_ppo()
    obs = batch_of_observations(model.env.envs[0].unwrapped, n=5)
    with torch.no_grad():
        actions, values, log_prob = model.policy(obs)
        assert actions.shape == (5,) and values.shape == (5, 1) and log_prob.shape == (5,)
        assert actions.dtype == torch.int64 and values.dtype == torch.float32
        v, lp, ent = model.policy.evaluate_actions(obs, actions.view(-1, 1).float())  # the buffer stores floats
        torch.testing.assert_close(lp, log_prob)
        torch.testing.assert_close(v, values)
        assert ent.shape == (5,) and (ent > 0).all()
        torch.testing.assert_close(model.policy.predict_values(obs), values)
        logits = model.policy.get_distribution(obs).distribution.logits
        assert logits.shape == (5, model.action_space.n)
        greedy = model.policy.get_distribution(obs).get_actions(deterministic=True)
        torch.testing.assert_close(greedy, logits.argmax(-1))


@pytest.mark.parametrize("masked", [False, True])
def test_rollout_sampling_draws_the_same_tokens_as_sb3_contribs_distribution(masked):
    """forward() samples without distribution objects; the same seed must give the same tokens and log-probs."""
    from sb3_contrib.common.maskable.distributions import MaskableCategoricalDistribution

    from agents.lm.actor_critic import sample_tokens

    generator = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(64, 512, generator=generator)
    masks = torch.rand(64, 512, generator=generator) > 0.5 if masked else None
    for deterministic in (False, True):
        distribution = MaskableCategoricalDistribution(512).proba_distribution(action_logits=logits)
        if masked:
            distribution.apply_masking(masks)
        torch.manual_seed(1)
        expected = distribution.get_actions(deterministic=deterministic)
        torch.manual_seed(1)
        actions, log_probs = sample_tokens(logits, masks, deterministic)
        assert torch.equal(actions, expected)
        torch.testing.assert_close(log_probs, distribution.log_prob(expected))
        if masked:
            assert masks[torch.arange(64), actions].all()


def test_pretrained_weights_survive_construction_and_dropout_is_off():
    model = make_ppo()
    reference = AutoModelForCausalLM.from_pretrained(lm_gym.DEFAULT_MODEL)
    for (name, p), (_, q) in zip(model.policy.lm.state_dict().items(), reference.state_dict().items()):
        torch.testing.assert_close(p, q, msg=f"{name} changed: ortho_init must stay off")
    assert not any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.policy.modules())
    obs = batch_of_observations(model.env.envs[0].unwrapped)
    model.policy.set_training_mode(True)
    with torch.no_grad():
        train_mode = model.policy.get_distribution(obs).distribution.logits
        model.policy.set_training_mode(False)
        eval_mode = model.policy.get_distribution(obs).distribution.logits
    torch.testing.assert_close(train_mode, eval_mode)  # PPO's ratio is exactly 1 before the first update


def test_predict_and_evaluate_policy():
    env = lm_gym.TextGenEnv(prompts=PROMPTS, max_new_tokens=4)
    model = make_ppo(env)
    obs, _ = env.reset(seed=0)
    action, state = model.predict(obs, deterministic=True)
    assert action.shape == () and 0 <= int(action) < env.action_space.n and state is None
    with torch.no_grad():
        expected = model.policy.get_distribution({k: torch.as_tensor(v[None]) for k, v in obs.items()})
    assert int(action) == int(expected.distribution.logits.argmax())
    one_prompt = Monitor(lm_gym.TextGenEnv(prompts=PROMPTS[:1], max_new_tokens=4, reward="length",
                                           max_prompt_tokens=env.max_prompt_tokens,
                                           reward_kwargs={"target": 2}))
    mean, std = evaluate_policy(model, one_prompt, n_eval_episodes=3, deterministic=True)
    assert -1.0 <= mean <= 0.0 and std == 0.0  # greedy decoding of one prompt repeats itself


def test_save_load_gives_the_same_predictions_and_training_continues(tmp_path):
    env = lm_gym.TextGenEnv(prompts=PROMPTS, max_new_tokens=4)
    model = make_ppo(env)
    model.learn(64)
    obs = [env.reset(seed=s)[0] for s in range(4)]
    before = [int(model.predict(o, deterministic=True)[0]) for o in obs]
    model.save(tmp_path / "ppo.zip")
    loaded = PPO.load(tmp_path / "ppo.zip", env=env, device="cpu")
    assert [int(loaded.predict(o, deterministic=True)[0]) for o in obs] == before
    for p, q in zip(model.policy.parameters(), loaded.policy.parameters()):
        torch.testing.assert_close(p, q)
    weights = [p.detach().clone() for p in loaded.policy.parameters()]
    loaded.learn(64, reset_num_timesteps=False)
    assert loaded.num_timesteps == 128
    assert any(not torch.equal(w, p) for w, p in zip(weights, loaded.policy.parameters()))


def test_a2c_trains_with_the_same_policy():
    model = A2C(LMActorCriticPolicy, lm_gym.TextGenEnv(prompts=PROMPTS, max_new_tokens=4), n_steps=8, seed=0,
                device="cpu", policy_kwargs={"optimizer_class": torch.optim.Adam})
    weights = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(32)
    assert any(not torch.equal(w, p) for w, p in zip(weights, model.policy.parameters()))


def test_model_by_path_loads_through_from_pretrained(local_model_dir):
    env = lm_gym.TextGenEnv(model=local_model_dir, prompts=PROMPTS, max_new_tokens=3)
    model = make_ppo(env, policy_kwargs={"model": local_model_dir})
    assert model.policy.lm.config.n_embd == 32  # the local model, not the bundled one
    # The model has 64 more logits than the tokenizer has tokens; the distribution covers the env's vocabulary.
    obs = batch_of_observations(env)
    with torch.no_grad():
        assert model.policy.get_distribution(obs).distribution.logits.shape[-1] == env.action_space.n
    model.learn(32)


def test_a_model_with_fewer_logits_than_the_vocabulary_is_refused():
    from gymnasium import spaces

    env = lm_gym.TextGenEnv(prompts=PROMPTS)
    with pytest.raises(ValueError, match="512 output logits"):
        LMActorCriticPolicy(env.observation_space, spaces.Discrete(10_000), lambda _: 1e-4)


def test_a_window_longer_than_the_model_positions_is_refused():
    env = lm_gym.TextGenEnv(prompts=PROMPTS, max_new_tokens=64)  # the bundled LM has 64 positions
    with pytest.raises(ValueError, match="64 positions.*lower max_new_tokens"):
        make_ppo(env)


def test_wrong_spaces_are_refused():
    from gymnasium import spaces

    with pytest.raises(ValueError, match="Discrete"):
        LMActorCriticPolicy(spaces.Box(0, 1, (3,)), spaces.Box(0, 1, (1,)), lambda _: 1e-4)
    with pytest.raises(ValueError, match="input_ids"):
        LMActorCriticPolicy(spaces.Box(0, 1, (3,)), spaces.Discrete(5), lambda _: 1e-4)


def test_save_pretrained_loads_in_a_transformers_pipeline_and_never_overwrites(tmp_path):
    model = make_ppo()
    model.learn(32)
    path = model.policy.save_pretrained(tmp_path / "lm")
    generator = pipeline("text-generation", model=str(path), device="cpu")
    text = generator("the movie was", max_new_tokens=5, do_sample=False)[0]["generated_text"]
    assert text.startswith("the movie was")
    reloaded = AutoModelForCausalLM.from_pretrained(path)
    torch.testing.assert_close(reloaded.state_dict()["lm_head.weight"], model.policy.lm.state_dict()["lm_head.weight"])
    with pytest.raises(FileExistsError, match="overwrite=True"):
        model.policy.save_pretrained(path)


def test_every_algorithm_takes_the_lm_policy_by_name():
    import warnings

    from sb3_contrib import QRDQN, TRPO, MaskablePPO
    from stable_baselines3 import DQN

    import agents
    from agents import LMDQNPolicy, LMQRDQNPolicy, LMTRPOPolicy

    env = lm_gym.TextGenEnv(prompts=PROMPTS, max_new_tokens=4)
    for cls, policy in ((PPO, LMActorCriticPolicy), (A2C, LMActorCriticPolicy), (MaskablePPO, LMActorCriticPolicy),
                        (TRPO, LMTRPOPolicy), (DQN, LMDQNPolicy), (QRDQN, LMQRDQNPolicy)):
        rollout = {"n_steps": 32} | ({} if cls is A2C else {"batch_size": 32}) if cls not in (DQN, QRDQN) else {}
        model = cls("LMPolicy", env, device="cpu", **rollout)
        assert type(model.policy) is policy
        assert type(cls(policy.__name__, env, device="cpu").policy) is policy  # the class name as a string too
    trpo = TRPO("LMPolicy", env, device="cpu").policy
    assert trpo.attn_implementation == "eager" and not trpo.shared_critic
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert agents.CheckpointCallback is agents.ResumableCheckpointCallback  # the old name still imports
    assert any("ResumableCheckpointCallback" in str(w.message) for w in caught)


def test_normalized_observations_are_refused_naming_vec_normalize():
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    env = VecNormalize(DummyVecEnv([lambda: lm_gym.TextGenEnv(prompts=PROMPTS, max_new_tokens=4)]))
    model = PPO("LMPolicy", env, n_steps=32, batch_size=32, device="cpu")
    with pytest.raises(ValueError, match=r"observation input_ids must be token ids in \[0, \d+\); got torch.float32 "
                                         r"values .*VecNormalize\(env, norm_obs=False\)"):
        model.learn(32)
    ids = batch_of_observations(lm_gym.TextGenEnv(prompts=PROMPTS, max_new_tokens=4))
    with pytest.raises(ValueError, match="token ids in"):  # out of range: past the embedding
        model.policy.evaluate_actions({**ids, "input_ids": ids["input_ids"] + 10**6}, torch.zeros(4))
    fine = VecNormalize(DummyVecEnv([lambda: lm_gym.TextGenEnv(prompts=PROMPTS, max_new_tokens=4)]), norm_obs=False)
    PPO("LMPolicy", fine, n_steps=32, batch_size=32, device="cpu").learn(32)
