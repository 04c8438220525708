"""The numbers the algorithms learn from: bootstrap values, KL under masks, dropout, the KL controller,
half-precision ratios and BOS (each of these was wrong once; see the issue "The numbers it learns from")."""

import numpy as np
import pytest
import torch
from stable_baselines3.common.callbacks import BaseCallback
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

import lm_gym
from agents import GroupAdvantageCallback, KLPenaltyCallback, RecomputeLogProbsCallback, make_algorithm, \
    sample_episodes
from agents.lm.kl import episode_equivalents
from lm_gym.models import start_token_ids

TOY = dict(reward="target_word", max_new_tokens=4)


class Snapshot(BaseCallback):
    """Copies the buffer's advantages and the logger's values at each rollout end (where it sits in the list)."""

    def __init__(self):
        super().__init__()
        self.advantages, self.logged = [], []

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        self.advantages.append(self.model.rollout_buffer.advantages.copy())
        self.logged.append(dict(self.logger.name_to_value))


def build(algo, n_envs=4, n_steps=16, seed=0, env_kwargs=None, **overrides):
    """``algo`` on the toy task (``env_kwargs`` None) or on TextGen-v0 with ``env_kwargs``, one minibatch per epoch."""
    group_size = 4 if algo in ("grpo", "dr_grpo", "rloo") else 1
    env = lm_gym.make_vec_env(n_envs, seed=seed, group_size=group_size, **(TOY if env_kwargs is None else env_kwargs))
    if algo != "a2c":
        overrides.setdefault("batch_size", n_steps * n_envs)
    return make_algorithm(algo, env, seed=seed, n_steps=n_steps, **overrides)


@pytest.mark.parametrize("algo", ["ppo", "a2c", "trpo", "maskable_ppo"])
def test_a_zero_kl_callback_leaves_advantages_bit_identical(algo):
    model = build(algo, n_steps=18)  # 4-token episodes: the rollouts end mid-episode, so GAE bootstraps
    before, after = Snapshot(), Snapshot()
    model.learn(2 * 18 * 4, callback=[before, KLPenaltyCallback(coef=0.0), after])
    for a, b in zip(before.advantages, after.advantages):
        np.testing.assert_array_equal(a, b)  # MaskablePPO bootstrapped from V(s_{T-1}): up to 0.37 apart


@pytest.mark.parametrize("algo", ["grpo", "reinforce"])
def test_a_zero_kl_callback_leaves_group_advantages_bit_identical(algo):
    runs = []
    for with_kl in (True, False):
        model = build(algo, n_steps=18)
        snapshot = Snapshot()
        kl = [KLPenaltyCallback(coef=0.0)] if with_kl else []
        model.learn(2 * 18 * 4, callback=[*kl, GroupAdvantageCallback(algo), snapshot])
        runs.append(snapshot.advantages)
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("algo, env_kwargs", [
    ("ppo", None), ("a2c", None), ("trpo", None),
    ("maskable_ppo", None),  # NLPO's top-p nucleus (0.9): the stored log-probs are renormalised over it
    ("maskable_ppo", {**TOY, "banned_tokens": list(range(5, 60))}),  # the env's static masks
])
def test_the_kl_to_the_initial_lm_is_zero_at_initialisation(algo, env_kwargs):
    model = build(algo, env_kwargs=env_kwargs)
    snapshot = Snapshot()
    model.learn(16 * 4, callback=[KLPenaltyCallback(coef=0.05), snapshot])
    assert abs(snapshot.logged[0]["kl/per_token"]) < 1e-4  # NLPO's was 0.04 per token: -log of the nucleus mass


def test_evaluation_kl_is_taken_on_the_unmasked_policy():
    model = build("maskable_ppo")
    episodes = sample_episodes(model.policy, lm_gym.TextGenEnv(**TOY), ["the movie was"], 8,
                               reference=model.policy.load_reference_model())
    assert max(abs(e.kl) for e in episodes) < 1e-3


def first_epoch_ratio_error(model, callbacks=()) -> tuple[float, float]:
    """Mean and max |ratio - 1| over the minibatches of one update at learning rate 0, as PPO computes them."""
    old, new = [], []
    buffer, policy = model.rollout_buffer, model.policy
    get, evaluate = buffer.get, policy.evaluate_actions

    def recording_get(batch_size=None):
        for samples in get(batch_size):
            old.append(samples.old_log_prob.clone())
            yield samples

    def recording_evaluate(*args, **kwargs):
        values, log_prob, entropy = evaluate(*args, **kwargs)
        if torch.is_grad_enabled():  # the update's call, not a callback's
            new.append(log_prob.detach().clone())
        return values, log_prob, entropy

    buffer.get, policy.evaluate_actions = recording_get, recording_evaluate
    model.learn(model.n_steps * model.n_envs, callback=list(callbacks))
    error = (torch.cat(new) - torch.cat(old)).exp().sub(1).abs()
    return float(error.mean()), float(error.max())


def test_lora_dropout_is_off_in_the_update():
    with pytest.warns(UserWarning, match="lora_dropout=0.1 set to 0"):
        model = build("ppo", learning_rate=0.0, n_epochs=1, policy_kwargs={
            "lora": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.1, "target_modules": ["c_attn"]}})
    torch.manual_seed(0)
    with torch.no_grad():  # trained adapters: B != 0, so dropout on their input would change the output
        for name, parameter in model.policy.lm.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    assert first_epoch_ratio_error(model)[1] < 1e-4  # was 0.11 with live adapter dropout


@pytest.mark.parametrize("policy_kwargs", [{"autocast_dtype": "bfloat16"}, {"dtype": "bfloat16"}])
def test_recomputed_log_probs_make_the_bfloat16_ratio_exactly_one(policy_kwargs):
    def bfloat16_ppo():  # the default task: 16-token episodes, 512-token rollouts in 4 minibatches
        return build("ppo", n_envs=8, n_steps=64, env_kwargs={}, batch_size=128, learning_rate=0.0, n_epochs=1,
                     policy_kwargs=policy_kwargs)

    without = first_epoch_ratio_error(bfloat16_ppo())
    with_recompute = first_epoch_ratio_error(bfloat16_ppo(), [RecomputeLogProbsCallback()])
    assert without[1] > 5e-3  # the KV-cached rollout and the full update round differently in bfloat16 (0.05)
    assert with_recompute == (0.0, 0.0)


@pytest.mark.slow
def test_the_adaptive_kl_controller_settles_near_its_target():
    """On the bundled task, PPO's reward pushes the KL above 2 nats/episode at a fixed coefficient of 0.05; the
    controller raises the coefficient until the KL per episode sits near the 1-nat target."""
    env = lm_gym.make_vec_env(8, seed=0)
    model = make_algorithm("ppo", env, seed=0)
    snapshot = Snapshot()
    model.learn(24_576, callback=[KLPenaltyCallback(coef=0.05, target=1.0, horizon=100), snapshot])
    kl = [logged["kl/per_episode"] for logged in snapshot.logged]
    coef = [logged["kl/coef"] for logged in snapshot.logged]
    assert max(kl) > 1.5  # it did overshoot, so the controller had something to do
    assert coef[-1] > 2 * coef[0]
    assert 0.6 < np.mean(kl[-8:]) < 1.5, kl[-8:]


def test_kl_per_episode_counts_episodes_cut_by_the_rollout_edges_by_their_tokens():
    callback = KLPenaltyCallback()
    ends = np.zeros((8, 1), dtype=bool)
    ends[[1, 5], 0] = True  # steps 0-1 end an episode begun 2 steps earlier; 2-5 one episode; 6-7 still running
    callback.running_lengths = np.array([2])
    ended, running = callback.episode_lengths(ends)
    assert ended == [4, 4] and running.tolist() == [2]
    assert episode_equivalents(8, ended, running) == 2.0  # 8 tokens of 4-token episodes; the old count said 3


def llama_style_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer that, like Llama's and Mistral's, puts <s> in front of every sequence it encodes."""
    words = ["<unk>", "<s>", "</s>", "the", "movie", "was", "great", "bad", "a", "film"]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="</s>")


def test_prompts_start_with_the_bos_of_tokenizers_that_add_one():
    tokenizer = llama_style_tokenizer()
    assert start_token_ids(tokenizer) == [1]
    assert start_token_ids(lm_gym.load_tokenizer()) == []  # the bundled GPT-2-style tokenizer adds none
    env = lm_gym.TextGenEnv(tokenizer=tokenizer, prompts=["the movie was"], reward=lambda prompt, completion: 0.0, max_new_tokens=2)
    obs, info = env.reset(seed=0)
    real = obs["input_ids"][obs["attention_mask"] == 1].tolist()
    assert real == [1, 3, 4, 5] and info["prompt"] == "the movie was"
    obs, _ = env.reset(options={"prompt": "a film"})
    assert obs["input_ids"][obs["attention_mask"] == 1].tolist() == [1, 8, 9]
    _, _, _, _, info = env.step(6)
    assert env.completion == "great"  # BOS is never part of the text the reward sees
    vec = lm_gym.TextGenVecEnv(2, env=env)
    vec.seed(0)
    observations = vec.reset()
    assert (observations["input_ids"][:, -4] == 1).all()


def test_truncated_prompts_keep_bos_and_their_text_leaves_it_out():
    env = lm_gym.TextGenEnv(tokenizer=llama_style_tokenizer(), prompts=["the movie was great"], reward=lambda prompt, completion: 0.0,
                            max_prompt_tokens=3, truncate_prompts=True)
    obs, info = env.reset(seed=0)
    assert obs["input_ids"][obs["attention_mask"] == 1].tolist() == [1, 3, 4]
    assert info["prompt"] == "the movie"
