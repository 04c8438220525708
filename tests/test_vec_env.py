"""TextGenVecEnv: the same episodes as n TextGenEnvs, stepped with array operations."""

import numpy as np
import pytest
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecMonitor

import lm_gym
from agents import EpisodeRolloutBuffer, LMActorCriticPolicy
from lm_gym import TextGenEnv, TextGenVecEnv

PROMPTS = ["the movie was", "i thought the acting", "honestly , the plot", "the ending"]


def random_tokens(rng, n, vocab=512, eos=0, p_eos=0.25):
    tokens = rng.integers(1, vocab, n)
    tokens[rng.random(n) < p_eos] = eos
    return tokens


@pytest.mark.parametrize("reward_mode", ["sparse", "dense"])
def test_steps_like_n_single_envs_seeded_alike(reward_mode):
    kwargs = dict(prompts=PROMPTS, max_new_tokens=5, reward="sentiment", reward_mode=reward_mode)
    n = 4
    vec, single = TextGenVecEnv(n, **kwargs), DummyVecEnv([lambda: TextGenEnv(**kwargs) for _ in range(n)])
    for venv in (vec, single):
        venv.seed(7)
        venv.set_options([{"prompt": "my own"}, {}, {}, {}])  # reset options reach env 0 only
    observations = [vec.reset(), single.reset()]
    rng, endings = np.random.default_rng(0), 0
    for step in range(60):
        for key in observations[0]:
            np.testing.assert_array_equal(observations[0][key], observations[1][key], err_msg=f"step {step} {key}")
        tokens = random_tokens(rng, n)
        (obs_a, rewards_a, dones_a, infos_a), (obs_b, rewards_b, dones_b, infos_b) = vec.step(tokens), single.step(tokens)
        observations = [obs_a, obs_b]
        np.testing.assert_array_equal(dones_a, dones_b)
        np.testing.assert_allclose(rewards_a, rewards_b, atol=1e-6)
        assert rewards_a.dtype == np.float32 and dones_a.dtype == bool
        for done, a, b in zip(dones_a, infos_a, infos_b):
            if not done:
                assert a == {}
                continue
            endings += 1
            assert {k: a[k] for k in ("prompt", "completion", "num_new_tokens")} == \
                {k: b[k] for k in ("prompt", "completion", "num_new_tokens")}
            for key in ("input_ids", "attention_mask"):
                np.testing.assert_array_equal(a["terminal_observation"][key], b["terminal_observation"][key])
    assert endings > 30 and vec.reset_infos[0] != {}


def test_decodes_and_scores_only_episodes_that_end(monkeypatch):
    calls = []

    class Recorder(lm_gym.Reward):
        name = "recorder"

        def __call__(self, prompts, completions, references):
            calls.append(list(completions))
            return [float(len(c)) for c in completions]

    venv = TextGenVecEnv(3, prompts=PROMPTS, reward=Recorder(), max_new_tokens=3)
    venv.seed(0)
    venv.reset()
    decoded = []
    batch_decode = venv.env.tokenizer.batch_decode
    monkeypatch.setattr(venv.env.tokenizer, "batch_decode",
                        lambda rows, **kw: decoded.append(len(rows)) or batch_decode(rows, **kw))
    great, eos = venv.env.tokenizer.convert_tokens_to_ids("Ġgreat"), venv.env.tokenizer.eos_token_id
    _, rewards, dones, _ = venv.step(np.array([great, great, great]))
    assert not dones.any() and decoded == [] and calls == []  # a running step decodes and scores nothing
    _, rewards, dones, infos = venv.step(np.array([eos, great, eos]))
    assert dones.tolist() == [True, False, True] and decoded == [2] and calls == [[" great", " great"]]
    assert rewards.tolist() == [6.0, 0.0, 6.0] and infos[0]["completion"] == " great"


def test_per_env_methods_state_round_trip_and_render():
    venv = TextGenVecEnv(2, prompts=PROMPTS, max_new_tokens=6, banned_tokens=["Ġbad"], render_mode="ansi")
    venv.seed(1)
    venv.reset()
    venv.step(np.array([5, 6]))
    masks = np.stack(venv.env_method("action_masks"))
    assert masks.shape == (2, venv.action_space.n) and masks.dtype == bool
    assert (masks.sum(1) == venv.action_space.n - 1).all()  # all but the banned token
    states = venv.env_method("get_state")
    assert states[0]["new_ids"] == [5] and states[1]["new_ids"] == [6] and not states[0]["done"]
    copy = TextGenVecEnv(2, prompts=PROMPTS, max_new_tokens=6, banned_tokens=["Ġbad"])
    for i, state in enumerate(states):
        copy.env_method("set_state", state, indices=[i])
    rng = np.random.default_rng(3)
    for _ in range(12):  # the restored copy continues exactly: tokens, episode ends and the prompts drawn next
        tokens = random_tokens(rng, 2)
        a, b = venv.step(tokens), copy.step(tokens)
        np.testing.assert_array_equal(a[0]["input_ids"], b[0]["input_ids"])
        np.testing.assert_array_equal(a[2], b[2])
    text = venv.render()
    assert text.count("\n") == 1 and all(any(p in line for p in PROMPTS) for line in text.splitlines())
    assert venv.env_method("render", indices=[1])[0] == text.splitlines()[1]
    frames = TextGenVecEnv(2, prompts=PROMPTS, render_mode="rgb_array")
    frames.reset()
    image = frames.render()
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 and image.min() < 255


def test_single_env_checkpoint_states_load_into_the_vec_env():
    single = TextGenEnv(prompts=PROMPTS, max_new_tokens=6)
    single.reset(seed=4)
    single.step(7)
    venv = TextGenVecEnv(1, prompts=PROMPTS, max_new_tokens=6)
    venv.env_method("set_state", single.get_state())
    rng = np.random.default_rng(5)
    for _ in range(10):
        token = int(random_tokens(rng, 1)[0])
        obs, reward, terminated, _, _ = single.step(token)
        vec_obs, vec_rewards, dones, _ = venv.step(np.array([token]))
        if terminated:
            obs, _ = single.reset()
        np.testing.assert_array_equal(vec_obs["input_ids"][0], obs["input_ids"])
        assert dones[0] == terminated and vec_rewards[0] == pytest.approx(reward)


def test_make_vec_env_builds_it_and_stock_ppo_trains_on_it():
    venv = lm_gym.make_vec_env(4, seed=0, prompts=PROMPTS, max_new_tokens=4)
    assert isinstance(venv, VecMonitor) and isinstance(venv.unwrapped, TextGenVecEnv)
    model = PPO(LMActorCriticPolicy, venv, n_steps=16, batch_size=32, n_epochs=1, seed=0, device="cpu",
                rollout_buffer_class=EpisodeRolloutBuffer)
    model.learn(128)
    assert len(model.ep_info_buffer) > 4  # VecMonitor saw episodes end


def test_subproc_vec_env_of_single_envs_keeps_working():
    venv = lm_gym.make_vec_env(2, seed=0, vec_env_cls=SubprocVecEnv, prompts=PROMPTS, max_new_tokens=3, reward="length",
                               reward_kwargs={"target": 1})
    try:
        venv.reset()
        eos = lm_gym.load_tokenizer().eos_token_id
        _, rewards, dones, infos = venv.step(np.array([5, eos]))
        assert dones.tolist() == [False, True] and infos[1]["completion"] == "" and rewards[1] == -1.0
        assert "references" not in infos[1] and "pending_reward" not in infos[1]
    finally:
        venv.close()


# ----- bad input: each error names the argument and the fix -----


def test_bad_actions_and_calls_are_refused_with_the_fix():
    venv = TextGenVecEnv(2, prompts=PROMPTS)
    with pytest.raises(RuntimeError, match="before reset"):
        venv.step(np.array([1, 2]))
    venv.reset()
    for bad, message in ((np.array([1, 2, 3]), "expected 2 integer token ids"), (np.array([1.0, 2.0]), "dtype float64"),
                         (np.array([1, 512]), "action=512 is not a token id")):
        with pytest.raises(ValueError, match=message):
            venv.step(bad)
    with pytest.raises(ValueError, match="set it on all of them"):
        venv.set_attr("max_new_tokens", 3, indices=[0])
    with pytest.raises(AttributeError, match="per-env methods are"):
        venv.env_method("step", 5)
    with pytest.raises(ValueError, match="num_envs=0"):
        TextGenVecEnv(0)
    with pytest.raises(ValueError, match="not both"):
        TextGenVecEnv(2, env=TextGenEnv(), prompts=PROMPTS)
    with pytest.raises(ValueError, match="render_mode='rgb'"):
        TextGenVecEnv(2, render_mode="rgb")


def same_tree(a, b) -> bool:
    """Equal nested dicts of arrays (object arrays included), as Gymnasium's vector infos are."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_tree(a[k], b[k]) for k in a)
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype == object and b.dtype == object:  # e.g. final_obs: one observation dict (or None) per env
        return a.shape == b.shape and all(same_tree(x, y) if x is not None else y is None for x, y in zip(a, b))
    return np.array_equal(a, b) and a.dtype == b.dtype


def test_gymnasium_make_vec_vector_entry_point_matches_sync_vector_env():
    import gymnasium as gym
    from gymnasium.vector import AutoresetMode

    kwargs = dict(max_new_tokens=3, reward="length", reward_kwargs={"target": 2})
    batched = gym.make_vec("TextGen-v0", 3, vectorization_mode="vector_entry_point", **kwargs)
    reference = gym.make_vec("TextGen-v0", 3, vectorization_mode="sync",
                             vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP}, **kwargs)
    assert isinstance(batched, lm_gym.TextGenVectorEnv) and batched.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    assert batched.observation_space == reference.observation_space and batched.action_space == reference.action_space
    first, second = batched.reset(seed=5), reference.reset(seed=5)
    assert same_tree(first[0], second[0]) and same_tree(first[1], second[1])
    rng, endings = np.random.default_rng(0), 0
    for step in range(12):
        actions = rng.integers(0, batched.single_action_space.n, 3)
        actions[0] = 0 if step % 2 else actions[0]  # EOS now and then: episodes of different lengths
        got, expected = batched.step(actions), reference.step(actions)
        for part, (mine, theirs) in enumerate(zip(got, expected)):
            assert same_tree(mine, theirs), (step, part)
        endings += int(got[2].sum())
    assert endings >= 6  # autoreset was exercised
    arithmetic = gym.make_vec("TextGen-Arithmetic-v0", 2, vectorization_mode="vector_entry_point")
    assert "=" in arithmetic.reset(seed=0)[1]["prompt"][0]
    batched.close(), reference.close(), arithmetic.close()


def test_info_has_the_same_keys_and_types_on_every_step():
    # What TorchRL's GymEnv checks: a spec built from the reset info must fit every later step's info.
    env = lm_gym.TextGenEnv(max_new_tokens=3)
    _, info = env.reset(seed=0)
    spec = {key: type(value) for key, value in info.items()}
    for _ in range(3):
        *_, terminated, _, info = env.step(int(env.action_space.sample()))
        assert {key: type(value) for key, value in info.items()} == spec
    assert terminated and info["num_new_tokens"] == 3 and info["completion"] == env.completion
