"""On a CUDA GPU: the policy computes what it computes on a CPU, stock PPO learns there (float32 and bf16 autocast),
and an RLlib learner trains on the GPU. Marked ``gpu``: they need CUDA, so a machine without one skips them;
``benchmarks/gpu.sh`` runs them (``pytest -m gpu``) with the GPU benchmarks."""

import json

import pytest
import torch
from stable_baselines3 import PPO

import lm_gym
from agents import EpisodeRolloutBuffer, LMActorCriticPolicy
from agents.runs.train import TrainConfig, train

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/gpu.sh)")]


def ppo_on(device: str, **policy_kwargs) -> PPO:
    env = lm_gym.make_vec_env(8, seed=0, reward="target_word", max_new_tokens=8)
    return PPO(LMActorCriticPolicy, env, n_steps=16, batch_size=64, seed=0, device=device, policy_kwargs=policy_kwargs,
               rollout_buffer_class=EpisodeRolloutBuffer)


@pytest.mark.parametrize("autocast_dtype, tolerance", [(None, 1e-4), ("bfloat16", 0.1)])
def test_the_gpu_policy_gives_the_cpu_policys_log_probs_and_values(autocast_dtype, tolerance):
    cpu, gpu = ppo_on("cpu"), ppo_on("cuda", autocast_dtype=autocast_dtype)
    gpu.policy.load_state_dict(cpu.policy.state_dict())
    obs = cpu.env.reset()
    actions = torch.arange(8)
    cpu_values, cpu_log_probs, _ = cpu.policy.evaluate_actions(cpu.policy.obs_to_tensor(obs)[0], actions)
    gpu_values, gpu_log_probs, _ = gpu.policy.evaluate_actions(gpu.policy.obs_to_tensor(obs)[0], actions.cuda())
    assert gpu_log_probs.device.type == "cuda" and gpu_log_probs.dtype == torch.float32
    torch.testing.assert_close(gpu_log_probs.cpu(), cpu_log_probs, atol=tolerance, rtol=0)
    torch.testing.assert_close(gpu_values.cpu(), cpu_values, atol=tolerance, rtol=0)


@pytest.mark.parametrize("autocast_dtype", [None, "bfloat16"])
def test_ppo_on_the_gpu_raises_the_target_word_reward(tmp_path, autocast_dtype):
    """The CPU learning test's task (0.02 -> 0.26 held-out in 8,192 steps on a CPU), trained on the GPU."""
    run = train(TrainConfig(reward="target_word", max_new_tokens=4, steps=8192, device="cuda",
                            autocast_dtype=autocast_dtype, eval_samples=4, out=str(tmp_path)))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["after"]["reward_mean"] > summary["before"]["reward_mean"] + 0.1, summary["after"]


def test_an_rllib_learner_trains_on_the_gpu(tmp_path):
    pytest.importorskip("ray.rllib", reason="the RLlib check needs lm-gym[rllib]")
    run = train(TrainConfig(backend="rllib", algo="ppo", reward="target_word", max_new_tokens=4, steps=1024,
                            n_steps=32, num_env_runners=1, num_gpus_per_learner=1, eval_samples=2, out=str(tmp_path)))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["after"]["kl_mean"] > 0  # the learner's GPU weights reached the env runners and the export
