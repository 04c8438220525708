import csv

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import configure

import lm_gym
from agents import AdaptiveKLController, KLPenaltyCallback, LMActorCriticPolicy

PROMPTS = ["the movie was", "i thought the acting", "the ending"]


class RecordRewards(BaseCallback):
    """Copies the buffer's rewards before the KL callback shapes them."""

    def _on_step(self):
        return True

    def _on_rollout_end(self):
        self.raw = self.model.rollout_buffer.rewards.copy()


def run_one_rollout(kl_callback, tmp_path=None):
    env = lm_gym.TextGenEnv(prompts=PROMPTS, max_new_tokens=5, reward="sentiment")
    model = PPO(LMActorCriticPolicy, env, n_steps=40, batch_size=40, n_epochs=1, seed=0, device="cpu", gamma=1.0)
    if tmp_path is not None:
        model.set_logger(configure(str(tmp_path), ["csv"]))
    recorder = RecordRewards()
    model.learn(40, callback=CallbackList([recorder, kl_callback]))
    return model, recorder.raw


def perturbed_reference(scale=0.5):
    reference = lm_gym.load_causal_lm()
    torch.manual_seed(0)
    with torch.no_grad():
        reference.lm_head.weight.add_(scale * torch.randn_like(reference.lm_head.weight))
    return reference.eval().requires_grad_(False)


def test_rewards_are_shaped_by_the_per_token_kl_to_the_reference():
    callback = KLPenaltyCallback(coef=0.3)
    callback.reference = reference = perturbed_reference()
    model, raw = run_one_rollout(callback)
    buffer = model.rollout_buffer
    # Reference log-probs computed independently, on each unpadded sequence.
    obs, actions = buffer.observations, buffer.actions.reshape(-1).astype(int)
    ids, mask = obs["input_ids"].reshape(-1, obs["input_ids"].shape[-1]), obs["attention_mask"].reshape(len(actions), -1)
    expected_ref = []
    with torch.no_grad():
        for row, action in zip(range(len(actions)), actions):
            seq = torch.as_tensor(ids[row][mask[row].astype(bool)])[None]
            expected_ref.append(reference(seq).logits[0, -1].log_softmax(-1)[action].item())
    kl = buffer.log_probs.reshape(-1) - np.array(expected_ref)
    np.testing.assert_allclose(buffer.rewards.reshape(-1), raw.reshape(-1) - 0.3 * kl, atol=1e-4)
    assert np.abs(kl).max() > 0.01  # the perturbed reference differs
    # Advantages were recomputed from the shaped rewards: recomputing again changes nothing.
    advantages = buffer.advantages.copy()
    buffer.compute_returns_and_advantage(callback.locals["values"], callback.locals["dones"])
    np.testing.assert_allclose(buffer.advantages, advantages, atol=1e-6)


def test_kl_is_zero_while_the_policy_is_the_reference_and_is_logged(tmp_path):
    model, raw = run_one_rollout(KLPenaltyCallback(coef=0.3), tmp_path)
    np.testing.assert_allclose(model.rollout_buffer.rewards, raw, atol=1e-5)
    rows = list(csv.DictReader(open(tmp_path / "progress.csv")))
    assert {"kl/per_token", "kl/per_episode", "kl/coef"} <= set(rows[0])
    assert float(rows[0]["kl/coef"]) == 0.3 and abs(float(rows[0]["kl/per_token"])) < 1e-5


def test_k3_estimator_is_never_negative():
    callback = KLPenaltyCallback(coef=1.0, estimator="k3")
    callback.reference = perturbed_reference()
    model, raw = run_one_rollout(callback)
    penalty = raw - model.rollout_buffer.rewards
    assert (penalty >= -1e-6).all() and penalty.max() > 0


def test_adaptive_controller_moves_the_coefficient_toward_the_target():
    controller = AdaptiveKLController(coef=0.1, target=6.0, horizon=1000)
    controller.update(kl=12.0, n_episodes=100)  # above target: error clipped to +0.2
    assert controller.coef == pytest.approx(0.1 * (1 + 0.2 * 0.1))
    controller.update(kl=3.0, n_episodes=100)  # below target: -0.2 after clipping... (3/6 - 1 = -0.5)
    assert controller.coef == pytest.approx(0.1 * 1.02 * 0.98)
    controller.update(kl=6.0, n_episodes=100)  # on target: unchanged
    assert controller.coef == pytest.approx(0.1 * 1.02 * 0.98)


def test_adaptive_callback_updates_its_coefficient():
    callback = KLPenaltyCallback(coef=0.2, target=0.001, horizon=100)
    callback.reference = perturbed_reference()
    run_one_rollout(callback)
    assert callback.coef > 0.2  # KL far above the tiny target


def test_bad_kl_arguments():
    with pytest.raises(ValueError, match="estimator"):
        KLPenaltyCallback(estimator="k2")
    with pytest.raises(ValueError, match="coef"):
        KLPenaltyCallback(coef=-1)
    with pytest.raises(ValueError, match="target"):
        AdaptiveKLController(0.1, target=0)
