import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import lm_gym
from lm_gym import TextGenEnv

PROMPTS = ["the movie was", "this film is"]


def make_env(**kwargs):
    kwargs.setdefault("prompts", PROMPTS)
    return TextGenEnv(**kwargs)


def test_passes_gymnasium_and_sb3_env_checkers():
    gym_check_env(gym.make("TextGen-v0").unwrapped)
    sb3_check_env(TextGenEnv(), warn=True)


def test_spaces_are_integer_boxes_over_the_full_vocabulary(bundled_tokenizer):
    env = make_env(max_new_tokens=5, max_prompt_tokens=7)
    assert env.action_space == gym.spaces.Discrete(len(bundled_tokenizer))
    assert set(env.observation_space.spaces) == {"input_ids", "attention_mask"}
    for key, space in env.observation_space.spaces.items():
        assert isinstance(space, gym.spaces.Box) and space.dtype == np.int64 and space.shape == (12,)
    assert env.observation_space["input_ids"].high.max() == len(bundled_tokenizer) - 1
    obs, _ = env.reset(seed=0)
    assert all(obs[k].dtype == np.int64 and obs[k].shape == (12,) for k in obs)


def test_gym_make_passes_keyword_arguments_through():
    env = gym.make("TextGen-v0", prompts=PROMPTS, max_new_tokens=3, reward="length", reward_kwargs={"target": 2})
    assert env.unwrapped.max_new_tokens == 3
    assert isinstance(env.unwrapped.reward, lm_gym.LengthReward)


def test_observation_is_left_padded_prompt_then_generated_tokens(bundled_tokenizer):
    env = make_env(max_new_tokens=4)
    obs, info = env.reset(options={"prompt": "the movie was"})
    prompt_ids = bundled_tokenizer("the movie was", add_special_tokens=False)["input_ids"]
    n = len(prompt_ids)
    assert obs["input_ids"][-n:].tolist() == prompt_ids
    assert obs["attention_mask"].tolist() == [0] * (env.window - n) + [1] * n
    assert (obs["input_ids"][: env.window - n] == bundled_tokenizer.pad_token_id).all()
    assert info == {"prompt": "the movie was", "completion": "", "num_new_tokens": 0}
    token = bundled_tokenizer.convert_tokens_to_ids("Ġgreat")
    obs, reward, terminated, truncated, info = env.step(token)
    assert obs["input_ids"][-n - 1 :].tolist() == prompt_ids + [token]
    assert obs["attention_mask"].sum() == n + 1
    assert (terminated, truncated) == (False, False)
    # The same keys every step; mid-episode steps decode nothing (the property does).
    assert info == {"prompt": "the movie was", "completion": "", "num_new_tokens": 1} and env.completion == " great"


def test_the_last_step_reports_the_decoded_completion_once(bundled_tokenizer, monkeypatch):
    env = make_env(max_new_tokens=3, reward="target_word")
    env.reset(options={"prompt": "the movie was"})
    decoded = []
    original = env.tokenizer.decode
    monkeypatch.setattr(env.tokenizer, "decode", lambda ids, **kw: decoded.append(list(ids)) or original(ids, **kw))
    great = bundled_tokenizer.convert_tokens_to_ids("Ġgreat")
    infos = [env.step(great)[4] for _ in range(3)]
    assert [info["completion"] for info in infos[:2]] == ["", ""] and decoded == [[great] * 3]  # one decode, at the end
    assert infos[2] == {"prompt": "the movie was", "completion": " great great great", "num_new_tokens": 3}


def test_reset_seed_draws_prompts_reproducibly():
    prompts = [f"prompt number {i}" for i in range(20)]
    draws = []
    for _ in range(2):
        env = make_env(prompts=prompts)
        draws.append([env.reset(seed=123)[1]["prompt"]] + [env.reset()[1]["prompt"] for _ in range(10)])
    assert draws[0] == draws[1]
    assert len(set(draws[0])) > 3  # different prompts get drawn
    env = make_env(prompts=prompts)
    other = [env.reset(seed=7)[1]["prompt"]] + [env.reset()[1]["prompt"] for _ in range(10)]
    assert other != draws[0]


def test_episode_terminates_at_eos_with_the_final_reward(bundled_tokenizer):
    env = make_env(reward="sentiment", max_new_tokens=10)
    env.reset(options={"prompt": "the movie was"})
    _, r1, terminated, _, _ = env.step(bundled_tokenizer.convert_tokens_to_ids("Ġgreat"))
    assert (r1, terminated) == (0.0, False)  # sparse: nothing before the end
    _, r2, terminated, truncated, info = env.step(bundled_tokenizer.eos_token_id)
    assert terminated and not truncated
    assert info["completion"] == " great"  # EOS is not part of the decoded text
    assert r2 == pytest.approx(lm_gym.SentimentReward()(["the movie was"], [" great"], [()])[0])
    assert r2 > 0.5


def test_token_budget_ends_the_episode_as_terminated(bundled_tokenizer):
    env = make_env(max_new_tokens=3, reward="target_word")
    env.reset(seed=0)
    great = bundled_tokenizer.convert_tokens_to_ids("Ġgreat")
    results = [env.step(great) for _ in range(3)]
    assert [r[2] for r in results] == [False, False, True]
    assert [r[3] for r in results] == [False, False, False]
    assert results[-1][1] == 1.0


def test_stop_tokens_are_configurable(bundled_tokenizer):
    env = make_env(stop_tokens=[], max_new_tokens=3)
    env.reset(seed=0)
    assert env.step(bundled_tokenizer.eos_token_id)[2] is False  # EOS does not stop
    env = make_env(stop_tokens=["."], max_new_tokens=5)
    env.reset(seed=0)
    assert env.step(bundled_tokenizer.convert_tokens_to_ids("."))[2] is True
    with pytest.raises(ValueError, match="stop_tokens"):
        make_env(stop_tokens=["not-a-token-at-all"])


def test_dense_rewards_sum_to_the_sparse_score_minus_the_empty_score(bundled_tokenizer):
    ids = bundled_tokenizer(" great and fun . i loved it", add_special_tokens=False)["input_ids"]
    returns = {}
    for mode in ("sparse", "dense"):
        env = make_env(reward="sentiment", reward_mode=mode, max_new_tokens=len(ids))
        env.reset(options={"prompt": "the movie was"})
        rewards = [env.step(t)[1] for t in ids]
        returns[mode] = rewards
    assert sum(1 for r in returns["dense"] if r != 0) > 1  # paid along the way
    assert sum(returns["dense"]) == pytest.approx(sum(returns["sparse"]) - 0.0)  # VADER("") == 0


def test_callable_reward_gets_prompt_and_completion(bundled_tokenizer):
    seen = []

    def reward(prompt, completion):
        seen.append((prompt, completion))
        return len(completion)

    env = make_env(reward=reward, max_new_tokens=1)
    env.reset(options={"prompt": "the plot"})
    _, r, terminated, _, _ = env.step(bundled_tokenizer.convert_tokens_to_ids("Ġgreat"))
    assert terminated and r == 6.0 and seen == [("the plot", " great")]


def test_render_modes(bundled_tokenizer, capsys):
    env = make_env(render_mode="ansi")
    env.reset(options={"prompt": "the movie was"})
    env.step(bundled_tokenizer.convert_tokens_to_ids("Ġgreat"))
    text = env.render()
    assert "the movie was" in text and "great" in text
    env = make_env(render_mode="human")
    env.reset(options={"prompt": "the movie was"})
    assert env.render() is None
    assert "the movie was" in capsys.readouterr().out
    assert make_env().render() is None


def test_module_qualified_id_works_in_subprocess_workers():
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import SubprocVecEnv

    vec_env = make_vec_env("lm_gym:TextGen-v0", n_envs=2, vec_env_cls=SubprocVecEnv,
                           env_kwargs={"prompts": PROMPTS, "render_mode": None})
    try:
        obs = vec_env.reset()
        assert obs["input_ids"].shape == (2, vec_env.observation_space["input_ids"].shape[0])
        obs, rewards, dones, infos = vec_env.step(np.array([0, 0]))  # token 0 is EOS: both finish
        assert dones.all() and "terminal_observation" in infos[0]
    finally:
        vec_env.close()


# ----- bad input: each error names the argument and the fix -----


def test_action_outside_the_vocabulary_is_refused():
    env = make_env()
    env.reset(seed=0)
    for bad in (env.action_space.n, -1, 2.5, np.array([1, 2])):
        with pytest.raises(ValueError, match="action=.*vocabulary"):
            env.step(bad)
    env.step(np.int64(5))  # numpy integers are fine


def test_step_after_the_episode_ended_or_before_reset():
    env = make_env(max_new_tokens=1)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(5)
    env.reset(seed=0)
    env.step(5)
    with pytest.raises(RuntimeError, match="after the episode ended.*reset"):
        env.step(5)


@pytest.mark.parametrize("prompt", ["", "   ", None])
def test_an_empty_prompt_in_reset_options_is_refused_in_one_line(prompt):
    env = lm_gym.TextGenEnv(max_new_tokens=4)
    with pytest.raises(ValueError, match=r"options\['prompt'\]=.*: give a non-empty string"):
        env.reset(options={"prompt": prompt})
    venv = lm_gym.TextGenVecEnv(2, max_new_tokens=4)
    venv.set_options({"prompt": prompt})
    with pytest.raises(ValueError, match=r"options\['prompt'\]"):
        venv.reset()


def test_prompt_longer_than_the_window_is_refused():
    with pytest.raises(ValueError, match="max_prompt_tokens=2"):
        make_env(max_prompt_tokens=2)
    env = make_env()
    with pytest.raises(ValueError, match="max_prompt_tokens"):
        env.reset(options={"prompt": "the movie was great and the acting was brilliant and fun"})


def test_truncate_prompts_keeps_the_leading_tokens(bundled_tokenizer):
    long = "the movie was great and the acting was brilliant and fun"
    env = make_env(prompts=[long, "the plot"], max_prompt_tokens=3, truncate_prompts=True)
    assert env.observation_space["input_ids"].shape == (3 + env.max_new_tokens,)
    first_three = bundled_tokenizer.decode(bundled_tokenizer(long)["input_ids"][:3])
    assert {p.text for p in env.prompts} == {first_three, "the plot"} and long.startswith(first_three)
    obs, info = env.reset(options={"prompt": long})
    assert info["prompt"] == first_three and obs["attention_mask"].sum() == 3
    with pytest.raises(ValueError, match="truncate_prompts=True needs max_prompt_tokens"):
        make_env(truncate_prompts=True)


def test_unknown_reward_name_lists_the_choices():
    with pytest.raises(ValueError, match="reward='sentimnt'.*sentiment"):
        make_env(reward="sentimnt")


def test_reward_returning_nan_or_raising_is_reported(bundled_tokenizer):
    env = make_env(reward=lambda p, c: float("nan"), max_new_tokens=1)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="finite"):
        env.step(5)

    def broken(prompt, completion):
        raise KeyError("boom")

    env = make_env(reward=broken, max_new_tokens=1)
    env.reset(seed=0)
    with pytest.raises(RuntimeError, match="raised KeyError"):
        env.step(5)


def test_tokenizer_without_pad_token_uses_eos(local_model_dir):
    env = make_env(model=local_model_dir)
    assert env.tokenizer.pad_token == env.tokenizer.eos_token
    env.reset(seed=0)


def test_tokenizer_without_pad_or_eos_token_says_how_to_fix(bundled_tokenizer):
    import copy

    tokenizer = copy.deepcopy(bundled_tokenizer)
    tokenizer.pad_token = None
    tokenizer.eos_token = None
    with pytest.raises(ValueError, match="add_special_tokens"):
        make_env(tokenizer=tokenizer)
