"""Multi-turn envs at the token level: MultiTurnEnv over any text env, its vector env, the KV cache across turn
ends, training through stock SB3, and the adapters for GEM, TextArena and reasoning-gym."""

import copy
import functools

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3 import PPO
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.vec_env import DummyVecEnv
from transformers import GPT2Config

import lm_gym
from agents import GroupAdvantageCallback, LMActorCriticPolicy, make_algorithm, sample_episodes
from agents.lm.forward import growth, next_token_logits
from agents.lm.kv_cache import RolloutKVCache
from lm_gym.multiturn import MultiTurnEnv
from lm_gym.turns import TurnCodec


class SayWord:
    """A text env defined here: each of ``turns`` turns pays 1 if the agent's text contains ``word``."""

    def __init__(self, word="great", turns=3):
        self.word, self.turns, self.turn, self.seed = word, turns, 0, None

    def reset(self, seed=None):
        self.turn, self.seed = 0, seed
        return "say something nice", {"seed": seed}

    def step(self, text):
        self.turn += 1
        return f"turn {self.turn} done", float(self.word in text), self.turn >= self.turns, False, {"turn": self.turn}


class ReviewTurns:
    """A text env defined here: the agent continues a review in three turns (the env asks about the story, then
    the acting); each turn pays the VADER sentiment of what the agent wrote in it (at most 1 per turn)."""

    QUESTIONS = ["and the story was", "and the acting was", "and the music was"]

    def __init__(self):
        self.sentiment = lm_gym.make_reward("sentiment")
        self.turn = 0

    def reset(self, seed=None):
        self.turn = 0
        return "the movie was", {}

    def step(self, text):
        reward = float(self.sentiment(["the movie was"], [text], [()])[0])
        self.turn += 1
        done = self.turn >= len(self.QUESTIONS)
        return ("" if done else self.QUESTIONS[self.turn]), reward, done, False, {}


def say_word_env(**kwargs):
    return MultiTurnEnv(SayWord, **{"max_tokens": 48, "max_turn_tokens": 4, **kwargs})


def real(obs):
    return obs["input_ids"][obs["attention_mask"] == 1].tolist()


def test_reply_tokens_are_context_and_rewards_land_on_each_turns_last_agent_token():
    env = say_word_env()
    tokenizer, eos = env.tokenizer, env.tokenizer.eos_token_id
    great = tokenizer(" great", add_special_tokens=False)["input_ids"]
    assert len(great) == 1
    obs, info = env.reset(seed=0)
    assert tokenizer.decode(real(obs)) == "say something nice\n" and info["prompt"] == "say something nice"
    actions, rewards, history = [], [], real(obs)
    for turn_tokens in ([great[0], eos], [7, 8, 9, 10], [great[0], eos]):  # the second turn runs out of tokens
        for token in turn_tokens:
            obs, reward, terminated, truncated, info = env.step(token)
            actions.append(token)
            rewards.append(reward)
            ids = real(obs)
            assert ids[:len(history)] == history  # the old row is a prefix of the new one, always
            assert ids[len(history)] == token  # the action comes first ...
            history = ids
    # ... and the rest is the env's: at turn ends, the end token (forced in turn 2) and the reply.
    assert rewards == [0, 1, 0, 0, 0, 0, 0, 1]
    assert terminated and not truncated
    assert info["transcript"][1][0] == tokenizer.decode([7, 8, 9, 10]) and info["turn"] == 3
    transcript = tokenizer.decode(real(obs))
    assert "turn 1 done" in transcript and "turn 2 done" in transcript  # replies are in the observation ...
    reply_ids = set(tokenizer("\nturn 1 done\n", add_special_tokens=False)["input_ids"])
    assert not reply_ids & set(actions) - {great[0], 7, 8, 9, 10, eos}  # ... never among the actions


def test_info_has_the_same_keys_and_types_on_reset_and_every_step():
    """TorchRL's GymEnv builds its info spec from the first step and reads those keys on every later one (a missing
    key is a KeyError there); Gymnasium's vector envs stack infos key by key."""
    env = say_word_env()
    eos = env.tokenizer.eos_token_id
    _, first = env.reset(seed=0)
    infos = [first] + [env.step(token)[4] for token in (5, eos, 5, 6, 7, 8, 5, eos)]
    for info in infos:
        assert {k: type(v) for k, v in info.items()} == {k: type(v) for k, v in first.items()}
    mid_turn, turn_end, last = infos[1], infos[2], infos[-1]
    assert not mid_turn["turn_end"] and mid_turn["agent_text"] == "" and mid_turn["turn"] == 0
    assert turn_end["turn_end"] and turn_end["turn"] == 1 and turn_end["reply_text"] == "turn 1 done"
    assert turn_end["completion"] == "" and last["completion"] == env.completion != ""
    assert len(last["transcript"]) == 3 and last["text_env_info"] == {"turn": 3} and \
        first["text_env_info"] == {"seed": first["text_env_seed"]}
    assert [i["num_new_tokens"] for i in infos] == list(range(9))


def test_max_turns_and_a_full_window_truncate_the_episode():
    env = say_word_env(max_turns=2)
    env.reset(seed=0)
    for _ in range(7):
        _, _, terminated, truncated, info = env.step(5)
    assert not terminated and not truncated
    _, _, terminated, truncated, info = env.step(5)
    assert truncated and not terminated and info["turn"] == 2  # the text env would have played a third turn
    tight = say_word_env(max_tokens=18)  # the first message (5 tokens) and one turn fit, not a second reply
    tight.reset(seed=0)
    for _ in range(4):
        _, _, terminated, truncated, info = tight.step(5)
    assert truncated and not terminated and info["window_full"]
    with pytest.raises(ValueError, match="raise max_tokens"):
        say_word_env(max_tokens=8).reset(seed=0)


def test_a_truncated_episode_ends_in_a_state_the_critic_sees_mid_episode():
    """At max_turns the last reply and the next generation prompt are appended, as after any other turn, so SB3's
    bootstrap V(terminal observation) reads a state that also occurs mid-episode; a terminated episode ends at the
    agent's end token (no bootstrap)."""
    eos = lm_gym.load_tokenizer().eos_token_id
    truncating, full = say_word_env(max_turns=2), say_word_env()
    for env in (truncating, full):
        env.reset(seed=0)
    for token in (5, eos, 6, eos):
        obs, _, terminated, truncated, info = truncating.step(token)
        mid = full.step(token)[0]
    assert truncated and not terminated and not info["window_full"]
    np.testing.assert_array_equal(obs["input_ids"], mid["input_ids"])  # the same row as the third turn's start
    assert truncating.tokenizer.decode(real(obs)).endswith("turn 2 done\n")
    venv = lm_gym.make_vec_env(2, seed=0, text_env=SayWord, max_tokens=48, max_turn_tokens=4, max_turns=2).unwrapped
    venv.reset()
    for token in (5, eos, 6, eos):
        _, _, dones, infos = venv.step(np.array([token, token]))
    assert dones.all() and all(real(i["terminal_observation"]) == real(obs) for i in infos)  # the vector env too
    won = MultiTurnEnv(functools.partial(SayWord, turns=1), max_tokens=48, max_turn_tokens=4)
    won.reset(seed=0)
    won.step(5)
    obs, _, terminated, _, _ = won.step(eos)
    assert terminated and real(obs)[-1] == eos


class Unseeded(SayWord):
    """A text env (a simulated user) that draws its first message from Python's global random stream and never
    seeds it itself."""

    def reset(self, seed=None):
        import random

        super().reset(seed)
        return str(random.randrange(10**6)), {}


def test_copies_of_a_self_unseeded_text_env_draw_different_streams_reproducibly():
    def first_messages(seed):
        venv = lm_gym.make_vec_env(4, seed=seed, text_env=Unseeded, max_tokens=48, max_turn_tokens=4).unwrapped
        venv.reset()
        return [info["prompt"] for info in venv.reset_infos]

    messages = first_messages(0)
    assert len(set(messages)) == 4, messages  # on main: ['885440'] x 4
    assert first_messages(0) == messages and first_messages(1) != messages
    grouped = lm_gym.make_vec_env(4, seed=0, group_size=2, text_env=Unseeded, max_tokens=48, max_turn_tokens=4)
    grouped.reset()
    prompts = [info["prompt"] for info in grouped.unwrapped.reset_infos]
    assert prompts[0] == prompts[1] and prompts[2] == prompts[3] and prompts[0] != prompts[2]  # a group: one instance


class Breach(SayWord):
    """A text env that breaks GEM's contract in one way, chosen by ``how``."""

    how = ""

    def reset(self, seed=None):
        observation, info = super().reset(seed)
        return observation if self.how == "bare reset" else (("" if self.how == "empty" else observation), info)

    def step(self, text):
        reply, reward, terminated, truncated, info = super().step(text)
        return {"four values": (reply, reward, terminated, info), "int reply": (7, reward, terminated, truncated, info),
                "nan reward": (reply, float("nan"), terminated, truncated, info),
                "text reward": (reply, "1", terminated, truncated, info)}.get(
            self.how, (reply, reward, terminated, truncated, info))


@pytest.mark.parametrize("how, message", [
    ("bare reset", r"reset\(seed=\d+\) returned a str 'say something nice'; .*reset\(seed\) -> \(observation: str"),
    ("four values", r"step\(\) at turn 1 on agent text .* returned 4 values .*; .*step\(text\) -> \(observation: str, "
                    r"reward: float, terminated: bool, truncated: bool, info: dict\)"),
    ("int reply", r"step\(\) at turn 1 .* returned an observation of type int \(7\)"),
    ("nan reward", r"step\(\) at turn 1 .* returned the reward nan \(a float\); rewards must be finite"),
    ("text reward", r"returned the reward '1' \(a str\)"),
    ("empty", r"first message of text env Breach \(seed \d+\), '', encodes to no tokens"),
])
def test_a_text_env_that_breaks_the_contract_gets_one_line_naming_it(how, message):
    breach = type("Breach", (Breach,), {"how": how})
    env = MultiTurnEnv(breach, max_tokens=48, max_turn_tokens=2, first_template="{observation}")
    with pytest.raises(ValueError, match="text env Breach" if how != "empty" else "Breach") as error:
        env.reset(seed=0)
        env.step(5)
        env.step(6)
    assert "\n" not in str(error.value)
    assert error.match(message)


def test_the_envs_default_window_fits_the_default_policy_and_trains(tmp_path):
    """MultiTurnEnv(text_env) and PPO(LMActorCriticPolicy, env) with both defaults: the window defaults to what the
    model can attend to (64 positions for the bundled LM; it was 512, which the policy refused)."""
    env = MultiTurnEnv(SayWord)
    assert env.window == 64
    model = PPO(LMActorCriticPolicy, env, n_steps=32, batch_size=32, n_epochs=1, device="cpu", seed=0)
    model.learn(64)
    assert model.num_timesteps == 64
    with pytest.raises(ValueError, match=r"window of 512 tokens .* \(multi-turn: max_tokens=64 or less, or leave"):
        PPO(LMActorCriticPolicy, MultiTurnEnv(SayWord, max_tokens=512), device="cpu")  # an explicit choice: refused
    GPT2Config(n_positions=1024).save_pretrained(tmp_path)  # a model with more positions: the window is capped
    assert MultiTurnEnv(SayWord, model=str(tmp_path), tokenizer=lm_gym.load_tokenizer()).window == 512


def test_multiturn_env_passes_gymnasium_and_sb3_checks():
    env = say_word_env()
    gym_check_env(env, skip_render_check=True)
    sb3_check_env(say_word_env())
    made = gym.make("TextGen-MultiTurn-v0", text_env=SayWord, max_tokens=48, max_turn_tokens=4)
    assert made.observation_space == env.observation_space


def test_a_text_env_that_raises_is_named_with_the_turn_and_the_text():
    class Broken(SayWord):
        def step(self, text):
            raise KeyError("boom")

    env = MultiTurnEnv(Broken, max_tokens=48, max_turn_tokens=2)
    env.reset(seed=0)
    env.step(5)
    with pytest.raises(RuntimeError, match=r"text env Broken raised in step\(\) at turn 1 on agent text .*KeyError"):
        env.step(6)


def test_growth_detects_rows_that_added_several_tokens():
    prev_ids = torch.tensor([[0, 0, 0, 5, 6], [0, 0, 0, 5, 6], [0, 0, 0, 5, 6], [0, 0, 0, 5, 6]])
    prev_mask = (prev_ids > 0).long()
    ids = torch.tensor([[0, 5, 6, 7, 8], [0, 0, 5, 6, 7], [0, 5, 9, 7, 8], [0, 0, 0, 5, 6]])
    # + a turn end and a reply | one token | history changed | unchanged
    assert growth(prev_ids, prev_mask, ids, (ids > 0).long()).tolist() == [2, 1, 0, 0]


def test_the_kv_cached_rollout_gives_a_full_forwards_logits_across_turn_ends():
    envs = [say_word_env(max_tokens=48, max_turn_tokens=3) for _ in range(3)]
    lm = lm_gym.load_causal_lm().eval()
    n = envs[0].action_space.n
    cache = RolloutKVCache()
    obs = [env.reset(seed=i)[0] for i, env in enumerate(envs)]
    rng = np.random.default_rng(0)
    turn_ends = 0
    for _ in range(20):
        batch = {k: torch.as_tensor(np.stack([o[k] for o in obs])) for k in obs[0]}
        cached, _ = cache(lm, batch, n, weights_version=0, hidden=False)
        with torch.no_grad():
            full, _ = next_token_logits(lm, batch, n, hidden=False)
        torch.testing.assert_close(cached, full, atol=2e-4, rtol=1e-4)
        for i, env in enumerate(envs):
            obs[i], _, terminated, truncated, info = env.step(int(rng.integers(5, n)))
            turn_ends += bool(info)
            if terminated or truncated:
                obs[i] = env.reset()[0]
    assert turn_ends >= 10
    assert cache.rows_restarted < 3 * 4  # turn ends continue the cache: only new episodes run in full


class EndlessWords(SayWord):
    """SayWord that never ends by itself: MultiTurnEnv's max_turns truncates every episode."""

    def step(self, text):
        reply, reward, _, truncated, info = super().step(text)
        return reply, reward, False, truncated, info


def test_sb3s_truncation_bootstrap_keeps_the_other_rows_kv_cache():
    """SB3 bootstraps each truncated episode with predict_values on its terminal observation alone (one row); that
    call used to replace the rollout cache of all envs by a cache of one row, so the next step ran every env's whole
    sequence again. Now only the rows whose episodes restart run in full."""
    venv = lm_gym.make_vec_env(4, seed=0, text_env=EndlessWords, max_tokens=48, max_turn_tokens=3, max_turns=2)
    model = make_algorithm("ppo", venv, seed=0, device="cpu", n_steps=32, batch_size=128, n_epochs=1)
    ends = []
    model.learn(128, callback=lambda locals_, _: ends.append(int(locals_["dones"].sum())) or True)
    cache = model.policy.kv_cache
    assert sum(ends) >= 12  # every episode truncated, 2 turns of at most 3 tokens
    assert cache.rows_restarted <= 4 + sum(ends), (cache.rows_restarted, sum(ends))  # on main: 4 + 4 x sum(ends)


def test_vector_env_equals_single_envs_in_a_dummy_vec_env():
    vec = lm_gym.make_vec_env(4, seed=3, text_env=SayWord, max_tokens=48, max_turn_tokens=3).unwrapped
    single = DummyVecEnv([functools.partial(say_word_env, max_turn_tokens=3) for _ in range(4)])
    single.seed(3)
    a, b = vec.reset(), single.reset()
    rng = np.random.default_rng(0)
    great = vec.env.tokenizer(" great", add_special_tokens=False)["input_ids"][0]
    for _ in range(40):
        actions = np.where(rng.random(4) < 0.3, great, rng.integers(5, 400, size=4))
        a, ra, da, ia = vec.step(actions)
        b, rb, db, ib = single.step(actions)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
        np.testing.assert_array_equal(ra, rb)
        np.testing.assert_array_equal(da, db)
        for x, y in zip(ia, ib):
            assert x.get("turn") == y.get("turn") and x.get("reply_text") == y.get("reply_text")


def test_a_group_plays_one_instance():
    vec = lm_gym.make_vec_env(4, seed=0, group_size=4, text_env=SayWord, max_tokens=48, max_turn_tokens=3).unwrapped
    vec.reset()
    seeds = [env.text_env.seed for env in vec.envs]
    assert len(set(seeds)) == 1 and [info["group"] for info in vec.reset_infos] == [0, 0, 0, 0]


def test_state_round_trip_continues_the_same_conversation():
    env = say_word_env()
    env.reset(seed=0)
    for token in (5, 6, 7, 8, 9):
        env.step(token)
    state = env.get_state()
    twin = copy.copy(env)
    twin.set_state(state)
    for token in (10, 11, 12):
        a, b = env.step(token), twin.step(token)
        np.testing.assert_array_equal(a[0]["input_ids"], b[0]["input_ids"])
        assert a[1:4] == b[1:4]


def test_text_envs_global_reseeding_does_not_touch_the_trainers_streams():
    class Reseeding(SayWord):
        def reset(self, seed=None):
            np.random.seed(seed)  # what GEM's reset does
            return super().reset(seed)

    env = MultiTurnEnv(Reseeding, max_tokens=48, max_turn_tokens=4)
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    env.reset(seed=0)
    assert np.random.rand() == expected


def chat_tokenizer():
    tokenizer = lm_gym.load_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                               "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    return tokenizer


def test_chat_template_turns_are_sliced_from_a_fixed_base_conversation():
    tokenizer = chat_tokenizer()
    codec = TurnCodec(tokenizer)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert codec.chat and codec.end_id == im_end and im_end in codec.turn_end_ids
    assert tokenizer.decode(codec.after_end_ids) == "\n"
    first = codec.first("hello")
    assert tokenizer.decode(first) == "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
    # Agent turn "hi<|im_end|>", then the reply: the whole is what the template renders for the conversation.
    agent = codec.encode("hi") + [im_end]
    (reply,) = codec.replies(["fine"])
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"},
                                              {"role": "user", "content": "fine"}], tokenize=False,
                                             add_generation_prompt=True)
    assert tokenizer.decode(first + agent + reply) == rendered


REVIEW_TURNS = dict(text_env=ReviewTurns, max_tokens=64, max_turn_tokens=5, max_turns=3, reply_template=" {reply}")


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["ppo", "grpo"])
def test_stock_ppo_and_grpo_raise_a_per_turn_reward(algo):
    """Three turns, each paid its sentiment: the bundled LM starts near 0.1 per turn; the optimum is about 3."""
    held_out = [{"text_env_seed": 10**6 + i} for i in range(16)]
    venv = lm_gym.make_vec_env(8, seed=0, group_size=4 if algo == "grpo" else 1, **REVIEW_TURNS)
    model = make_algorithm(algo, venv, seed=0, learning_rate=1e-3, n_steps=48)
    env = MultiTurnEnv(**REVIEW_TURNS)
    torch.manual_seed(0)
    before = np.mean([e.reward for e in sample_episodes(model.policy, env, held_out, 4)])
    callbacks = [GroupAdvantageCallback("grpo")] if algo == "grpo" else []
    model.learn(6144, callback=callbacks)
    torch.manual_seed(0)
    after = np.mean([e.reward for e in sample_episodes(model.policy, env, held_out, 4)])
    assert after > before + 0.8, (before, after)


def test_gem_env_runs_episodes_through_ppo():
    pytest.importorskip("gem")
    from lm_gym.tasks.guess_number import GUESS_NUMBER_MODEL

    venv = lm_gym.make_vec_env(2, seed=0, text_env="gem:game:GuessTheNumber-v0-easy", model=str(GUESS_NUMBER_MODEL),
                               max_tokens=320, max_turn_tokens=12)
    model = make_algorithm("ppo", venv, seed=0, model=str(GUESS_NUMBER_MODEL), n_steps=64, batch_size=128)
    model.learn(128)
    assert len(model.ep_info_buffer) > 0  # whole GEM games were played and scored through stock PPO
    assert isinstance(model.policy, LMActorCriticPolicy)


@pytest.mark.parametrize("text_env, seen, distinct", [
    ("gem:game:GuessTheNumber-v0-easy", 32, 10),  # 10 secrets: every held-out seed deals a training instance
    ("textarena:GuessTheNumber-v0", 32, 20),  # 20 secrets (its history grows across resets: not identity)
    ("gem:game:Sudoku-v0-easy", 0, 128),  # a new puzzle per seed
])
def test_held_out_seeds_that_repeat_training_instances_are_counted(text_env, seen, distinct):
    pytest.importorskip(text_env.partition(":")[0])
    from lm_gym.instances import held_out_overlap
    from lm_gym.multiturn import HELD_OUT_SEEDS
    from lm_gym.tasks.guess_number import GUESS_NUMBER_MODEL

    env = MultiTurnEnv(text_env, max_tokens=512, max_turn_tokens=8, model=str(GUESS_NUMBER_MODEL))
    overlap = held_out_overlap(env, [HELD_OUT_SEEDS + i for i in range(32)])
    assert (overlap.seen_in_training, overlap.distinct_training_instances) == (seen, distinct)


def test_an_instance_is_its_plain_state_without_prose_resources_or_cycles():
    from lm_gym.instances import plain_state

    class Game:
        pass

    game = Game()
    game.secret, game.rule, game.words, game.rng = 7, "guess " * 20, [str(i) for i in range(5000)], np.random.default_rng()
    game.board, game.me = {"rows": [1, 2], "name": "easy"}, game
    assert plain_state(game) == (("board", (("name", "easy"), ("rows", (1, 2)))), ("me", None), ("rng", None),
                                 ("rule", None), ("secret", 7), ("words", None))


def test_a_run_on_a_game_with_few_instances_says_so_in_its_summary(tmp_path):
    pytest.importorskip("gem")
    from agents.runs.train import TrainConfig, train

    run = train(TrainConfig(env="gem:game:GuessTheNumber-v0-easy", steps=64, n_envs=2, n_steps=32, batch_size=64,
                            eval_samples=1, checkpoint_every=0, env_options={"max_turn_tokens": 8},
                            out=str(tmp_path)))
    summary = __import__("json").loads((run / "summary.json").read_text())
    assert summary["held_out_overlap"] == {"held_out": 32, "seen_in_training": 32, "probed": 128,
                                           "distinct_training_instances": 10}


def test_textarena_single_player_game_through_the_shim():
    pytest.importorskip("textarena")
    env = MultiTurnEnv("textarena:GuessTheNumber-v0", max_tokens=512, max_turn_tokens=4,
                       model=str(__import__("lm_gym.tasks.guess_number", fromlist=["x"]).GUESS_NUMBER_MODEL))
    obs, info = env.reset(seed=0)
    assert "Guess The Number" in info["prompt"]
    text_env = env.text_env
    reply, reward, terminated, truncated, _ = text_env.step("[5]")
    assert reply.startswith("[GAME]") and "[Player]" not in reply and not terminated


def test_reasoning_gym_dataset_as_single_turn_prompts_and_reward():
    pytest.importorskip("reasoning_gym")
    prompts = lm_gym.reasoning_gym_prompts("basic_arithmetic", size=5, seed=1)
    reward = lm_gym.make_reward("reasoning_gym", dataset="basic_arithmetic", size=5, seed=1)
    right = reward([p.text for p in prompts], [p.references[0] for p in prompts], [p.references for p in prompts])
    wrong = reward([p.text for p in prompts], ["no idea"] * 5, [p.references for p in prompts])
    assert list(right) == [1.0] * 5 and list(wrong) == [0.0] * 5
    env = lm_gym.TextGenEnv(prompts=prompts, reward="reasoning_gym", max_new_tokens=4,
                            reward_kwargs={"dataset": "basic_arithmetic", "size": 5, "seed": 1})
    obs, info = env.reset(seed=0)
    assert info["prompt"] in {p.text for p in prompts}
