"""The RLlib backend: LMRLModule, KL shaping, PPO/APPO/IMPALA runs, export, evaluation, resume, resources."""

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import ray
import torch
from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner
from ray.rllib.env.single_agent_episode import SingleAgentEpisode
from ray.rllib.utils.metrics.metrics_logger import MetricsLogger
from ray.rllib.utils.postprocessing.episodes import add_one_ts_to_episodes_and_truncate
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, pipeline

import lm_gym
from agents import LMActorCriticPolicy, evaluate_run, sample_episodes
from agents.lm.kl import reference_log_probs
from agents.rllib import KLShaping, LMRLModule, check_resources
from agents.rllib.algorithms import check_module_config, rllib_config, trained_module
from agents.rllib.log_probs import RecomputeLogProbs
from agents.rllib.segments import BOOTSTRAP_STEP_ADDED
from agents.runs.checkpoints import CheckpointError, checkpoint_dirs
from agents.runs.rllib_backend import RLlibTrainer, check_reachable, load_module
from agents.runs.cli import main
from agents.runs.watchdog import TrainingStalled
from agents.runs.train import TrainConfig, train

# Tests that start RLlib algorithms share one xdist worker and one local Ray (2 CPUs, as on the CI machine).
RAY = pytest.mark.xdist_group("ray")
TASK = ["--reward", "target_word", "--max-new-tokens", "4", "--eval-samples", "8", "--checkpoint-every", "0"]
PROMPTS = ["the movie was", "i thought the acting", "honestly , the plot", "the ending"]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


def observations(env, lengths=(0, 2, 1, 3)):
    """A batch of TextGen observations of different lengths (so different left padding)."""
    rows = []
    for prompt, steps in zip(PROMPTS, lengths):
        obs, _ = env.reset(options={"prompt": prompt})
        for token in range(5, 5 + steps):
            obs = env.step(token)[0]
        rows.append(obs)
    return {k: torch.as_tensor(np.stack([r[k] for r in rows])) for k in rows[0]}


def test_the_module_is_the_sb3_policys_lm_and_critic_in_rllibs_contract():
    env = lm_gym.TextGenEnv(prompts=PROMPTS, max_new_tokens=4)
    module = LMRLModule(observation_space=env.observation_space, action_space=env.action_space,
                        model_config={"vf_share_layers": True})  # RLlib adds its own keys: ignored
    policy = LMActorCriticPolicy(env.observation_space, env.action_space, lambda _: 1e-4)
    obs = observations(env)
    with torch.no_grad():
        train_out = module.forward_train({Columns.OBS: obs})
        sb3_logits = policy.get_distribution(obs).distribution.logits
        torch.testing.assert_close(train_out[Columns.ACTION_DIST_INPUTS].log_softmax(-1), sb3_logits)
        values = module.compute_values({Columns.OBS: obs})
        assert values.shape == (4,)
        torch.testing.assert_close(module.compute_values({Columns.OBS: obs}, train_out[Columns.EMBEDDINGS]), values)
    torch.manual_seed(0)
    explore = module.forward_exploration({Columns.OBS: obs})  # RLlib calls it with gradients enabled
    assert module.kv_cache.rows_seen == 4  # ... and it still runs on the rollout KV cache
    actions = explore[Columns.ACTIONS]
    expected = sb3_logits.gather(1, actions[:, None]).squeeze(1)
    torch.testing.assert_close(explore[Columns.ACTION_LOGP], expected, atol=1e-5, rtol=1e-5)
    # Only the sampled token's log-prob is stored per step, not vocab_size logits.
    assert explore[Columns.ACTION_DIST_INPUTS].shape == (4, 1) and not explore[Columns.ACTION_LOGP].requires_grad
    greedy = module.forward_inference({Columns.OBS: obs})[Columns.ACTIONS]
    assert torch.equal(greedy, sb3_logits.argmax(-1))
    stored = module.get_exploration_action_dist_cls().from_logits(explore[Columns.ACTION_DIST_INPUTS])
    with pytest.raises(NotImplementedError, match="use_kl_loss=False"):
        stored.kl(stored)
    assert float(module.kl_coef) == 0.0 and "kl_coef" in module.state_dict()  # checkpointed with the weights


def test_kl_shaping_subtracts_coef_times_kl_from_every_generated_token():
    env = lm_gym.TextGenEnv(prompts=PROMPTS, max_new_tokens=4, reward="target_word")
    module = LMRLModule(observation_space=env.observation_space, action_space=env.action_space,
                        model_config={"kl_coef": 0.5})
    # The reference is the initial LM; perturb the policy so that the KL is not zero.
    with torch.no_grad():
        module.lm.lm_head.weight.add_(0.3 * torch.randn_like(module.lm.lm_head.weight))
    obs, _ = env.reset(seed=0)
    episode = SingleAgentEpisode(observations=[obs], observation_space=env.observation_space,
                                 action_space=env.action_space, len_lookback_buffer=0)
    for token in (7, 9, 11, 0):
        with torch.no_grad():
            logits = module.forward_train({Columns.OBS: {k: torch.as_tensor(v[None]) for k, v in obs.items()}})
        log_prob = float(logits[Columns.ACTION_DIST_INPUTS].log_softmax(-1)[0, token])
        obs, reward, terminated, _, _ = env.step(token)
        episode.add_env_step(obs, token, reward, terminated=terminated,
                             extra_model_outputs={Columns.ACTION_LOGP: np.float32(log_prob)})
    episode = episode.to_numpy()
    rewards = np.asarray(episode.get_rewards(), dtype=np.float32)
    steps = episode.get_observations(indices=slice(0, 4))
    reference = reference_log_probs(module.load_reference_model(), steps, episode.get_actions(), env.action_space.n,
                                    "cpu")
    kl = episode.get_extra_model_outputs(key=Columns.ACTION_LOGP) - reference
    add_one_ts_to_episodes_and_truncate([episode])  # what RLlib's PPO/IMPALA learners do first
    metrics = MetricsLogger()
    KLShaping()(rl_module={DEFAULT_MODULE_ID: module}, batch={}, episodes=[episode],
                shared_data={BOOTSTRAP_STEP_ADDED: True}, metrics=metrics)
    shaped = np.asarray(episode.get_rewards(), dtype=np.float32)
    np.testing.assert_allclose(shaped[:4], rewards - 0.5 * kl, atol=1e-5)
    assert shaped[4] == 0.0 and np.abs(kl).max() > 0.01  # the bootstrap step is not a token: untouched
    logged = {name: metrics.peek((DEFAULT_MODULE_ID, name)) for name in
              ("kl/per_token", "kl/per_episode", "kl/coef", "kl/penalty_per_episode")}
    assert logged["kl/coef"] == pytest.approx(0.5) and logged["kl/per_episode"] == pytest.approx(kl.sum(), rel=1e-4)
    assert logged["kl/per_token"] == pytest.approx(kl.mean(), rel=1e-4)
    assert logged["kl/penalty_per_episode"] == pytest.approx(0.5 * kl.sum(), rel=1e-4)


def test_kl_per_episode_counts_truncated_episodes_as_ended():
    """A truncated episode of 4 tokens and a terminated one of 2: two whole episodes (6 tokens / mean length 3).
    Counting the truncated one as running made it 6 / 2 = 3 episodes, and kl/per_episode a third too low."""
    env = lm_gym.TextGenEnv(prompts=PROMPTS, max_new_tokens=4, reward="target_word")
    module = LMRLModule(observation_space=env.observation_space, action_space=env.action_space,
                        model_config={"kl_coef": 0.5})
    with torch.no_grad():
        module.lm.lm_head.weight.add_(0.3 * torch.randn_like(module.lm.lm_head.weight))
    episodes = []
    for tokens, truncated in (((7, 9, 11, 13), True), ((5, 0), False)):
        obs, _ = env.reset(seed=0)
        episode = SingleAgentEpisode(observations=[obs], observation_space=env.observation_space,
                                     action_space=env.action_space, len_lookback_buffer=0)
        for i, token in enumerate(tokens):
            obs, reward, _, _, _ = env.step(token)
            last = i == len(tokens) - 1
            episode.add_env_step(obs, token, reward, terminated=last and not truncated, truncated=last and truncated,
                                 extra_model_outputs={Columns.ACTION_LOGP: np.float32(-1.0)})
        episodes.append(episode.to_numpy())
    assert episodes[0].is_truncated and episodes[1].is_terminated
    steps = {k: np.concatenate([e.get_observations(indices=slice(0, len(e)))[k] for e in episodes]) for k in obs}
    actions = np.concatenate([e.get_actions() for e in episodes])
    kl = -1.0 - reference_log_probs(module.load_reference_model(), steps, actions, env.action_space.n, "cpu")
    add_one_ts_to_episodes_and_truncate(episodes)
    metrics = MetricsLogger()
    KLShaping()(rl_module={DEFAULT_MODULE_ID: module}, batch={}, episodes=episodes,
                shared_data={BOOTSTRAP_STEP_ADDED: True}, metrics=metrics)
    assert metrics.peek((DEFAULT_MODULE_ID, "kl/episode_length")) == pytest.approx(3.0)
    assert metrics.peek((DEFAULT_MODULE_ID, "kl/per_episode")) == pytest.approx(kl.sum() / 2, rel=1e-4)


def test_recomputed_log_probs_are_the_learners_forward_under_bfloat16():
    env = lm_gym.TextGenEnv(prompts=PROMPTS, max_new_tokens=6, reward="target_word")
    module = LMRLModule(observation_space=env.observation_space, action_space=env.action_space,
                        model_config={"autocast_dtype": "bfloat16"})
    obs, _ = env.reset(seed=0)
    episode = SingleAgentEpisode(observations=[obs], observation_space=env.observation_space,
                                 action_space=env.action_space, len_lookback_buffer=0)
    torch.manual_seed(0)
    terminated = False
    while not terminated:  # sampled as the env runners sample: KV-cached, one token per call
        out = module.forward_exploration({Columns.OBS: {k: torch.as_tensor(v[None]) for k, v in obs.items()}})
        token = int(out[Columns.ACTIONS][0])
        obs, reward, terminated, _, _ = env.step(token)
        episode.add_env_step(obs, token, reward, terminated=terminated,
                             extra_model_outputs={Columns.ACTION_LOGP: out[Columns.ACTION_LOGP][0].numpy(),
                                                  Columns.ACTION_DIST_INPUTS: out[Columns.ACTION_DIST_INPUTS][0].numpy()})
    episode = episode.to_numpy()
    n = len(episode)
    add_one_ts_to_episodes_and_truncate([episode])
    RecomputeLogProbs()(rl_module={DEFAULT_MODULE_ID: module}, batch={}, episodes=[episode],
                        shared_data={BOOTSTRAP_STEP_ADDED: True}, metrics=MetricsLogger())
    steps = {k: torch.as_tensor(v) for k, v in episode.get_observations(indices=slice(0, n)).items()}
    with torch.no_grad():
        logits, _ = module.logits_and_hidden(steps)
    expected = logits.log_softmax(-1).gather(1, torch.as_tensor(episode.get_actions(indices=slice(0, n)))[:, None])
    recomputed = episode.get_extra_model_outputs(key=Columns.ACTION_LOGP, indices=slice(0, n))
    np.testing.assert_array_equal(recomputed, expected.squeeze(1).numpy())


def test_only_synchronous_ppo_recomputes_log_probs():
    with pytest.raises(ValueError, match="V-trace"):
        rllib_config("appo", {}, {"autocast_dtype": "bfloat16"}, recompute_log_probs=True)


@pytest.fixture(scope="module")
def ppo_run(local_ray, tmp_path_factory):
    """RLlib PPO through the CLI, no KL shaping: 2 env runners x 4 envs on the toy task."""
    out = tmp_path_factory.mktemp("rllib")
    logdirs, close = [], RLlibTrainer.close

    def recording_close(trainer):
        logdirs.append(Path(trainer.algorithm.logdir))  # what Ray's Trainable made under ~/ray_results
        close(trainer)

    RLlibTrainer.close = recording_close
    try:
        main(["train", "--backend", "rllib", "--algo", "ppo", *TASK, "--steps", "6144", "--learning-rate", "1e-3",
              "--n-steps", "32", "--num-env-runners", "2", "--kl-coef", "0", "--out", str(out)])
    finally:
        RLlibTrainer.close = close
    assert logdirs and not any(d.exists() for d in logdirs)  # no stray empty ~/ray_results folder per run
    (run,) = out.iterdir()
    return run


@RAY
def test_rllib_ppo_raises_the_held_out_reward_and_exports_a_hugging_face_lm(ppo_run):
    summary = json.loads((ppo_run / "summary.json").read_text())
    before, after = summary["before"]["reward_mean"], summary["after"]["reward_mean"]
    # Measured over seeds 0-5: 0.00-0.02 -> 0.75-1.0 (optimum 1.0; PPO's partial optimum "was great ." is 0.5).
    assert before < 0.1 and after > before + 0.35, (before, after)
    assert summary["config"]["backend"] == "rllib" and ppo_run.name.startswith("rllib_ppo-")
    # Where the pieces ran, recorded: the local Ray's one node, two env runner processes on it, the learner in
    # the driver's process.
    cluster = summary["cluster"]
    (node,) = cluster["nodes"]
    assert [r["worker_index"] for r in cluster["env_runners"]] == [1, 2] and cluster["cpus"] == node["cpus"] >= 2
    assert all(r["node_id"] == node["node_id"] and not r.get("in_driver") for r in cluster["env_runners"])
    assert [(learner["in_driver"], learner["device"]) for learner in cluster["learners"]] == [(True, "cpu")]
    assert (ppo_run / "algorithm").is_dir() and (ppo_run / "config.yaml").exists()
    metrics = [json.loads(line) for line in (ppo_run / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["num_env_steps"] >= 6144 and {"policy_loss", "vf_loss", "entropy"} <= set(metrics[-1])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(ppo_run / "tensorboard" / "train_1")).Reload()  # SB3's layout and tag names
    assert {"rollout/ep_rew_mean", "train/value_loss", "train/policy_gradient_loss"} <= set(events.Tags()["scalars"])
    assert events.Scalars("rollout/ep_rew_mean")[-1].step == metrics[-1]["num_env_steps"]
    held_out = EventAccumulator(str(ppo_run / "tensorboard" / "held_out")).Reload()
    assert [e.value for e in held_out.Scalars("held_out/reward_mean")] == pytest.approx([before, after])
    text = pipeline("text-generation", model=str(ppo_run / "lm"), device="cpu")("the movie was", max_new_tokens=3)
    assert text[0]["generated_text"].startswith("the movie was")
    evaluation = evaluate_run(ppo_run, samples=4)  # reads the RLlib checkpoint without Ray
    assert evaluation["stats"]["reward_mean"] > before + 0.2 and evaluation["stats"]["episodes"] == 8 * 4


@RAY
def test_rllib_kl_shaping_keeps_the_policy_closer_to_the_initial_lm(ppo_run, tmp_path):
    main(["train", "--backend", "rllib", "--algo", "ppo", *TASK, "--steps", "6144", "--learning-rate", "1e-3",
          "--n-steps", "32", "--num-env-runners", "2", "--kl-coef", "1.0", "--out", str(tmp_path)])
    (run,) = tmp_path.iterdir()
    shaped = json.loads((run / "summary.json").read_text())["after"]["kl_mean"]
    free = json.loads((ppo_run / "summary.json").read_text())["after"]["kl_mean"]
    assert shaped < 0.5 * free, (shaped, free)


def _train_async(algo: str, tmp_path, steps: int = 12288) -> dict:
    run = train(TrainConfig(backend="rllib", algo=algo, reward="target_word", max_new_tokens=4, steps=steps,
                            learning_rate=1e-3, n_steps=32, num_env_runners=2, kl_coef=0.0, checkpoint_every=0,
                            eval_samples=8, out=str(tmp_path)))
    assert (run / "lm" / "model.safetensors").exists()
    return json.loads((run / "summary.json").read_text())


@RAY
def test_impala_raises_the_held_out_reward(local_ray, tmp_path):
    # Asynchronous: how much the learner trains per env step depends on how busy the CPU is. Measured at 12,288 steps:
    # +0.96, +0.98 alone (seeds 0, 1), but +0.31 once under -n 2 while the other worker trained; twice the steps
    # keep the margin there.
    summary = _train_async("impala", tmp_path, steps=24576)
    before, after = summary["before"]["reward_mean"], summary["after"]["reward_mean"]
    assert after > before + 0.4, (before, after)


@RAY
def test_appo_trains_the_same_lm_on_the_same_env(local_ray, tmp_path):
    """APPO trains the shared module end to end. Its learning on this toy task is not asserted: asynchronous,
    so the number of updates per env step depends on the machine's speed, and the held-out gain measured in
    nine runs on 2 cores was +0.04 to +0.27 (and 0.00 once, in CI with transformers 4.56). What must hold is
    that the learner updated the policy the env runners sample from: it moved away from the initial LM
    (KL measured 0.6-12.5 nats)."""
    summary = _train_async("appo", tmp_path)
    assert summary["before"]["kl_mean"] < 1e-3 < 0.3 < summary["after"]["kl_mean"], summary["after"]


@RAY
def test_lora_on_rllib_trains_adapters_and_exports_a_merged_lm(local_ray, tmp_path):
    run = train(TrainConfig(backend="rllib", algo="ppo", reward="target_word", max_new_tokens=4, steps=512, n_steps=32,
                            learning_rate=1e-2, num_env_runners=1, checkpoint_every=0, eval_samples=2,
                            lora={"r": 4, "target_modules": ["c_attn"]}, out=str(tmp_path)))
    merged = AutoModelForCausalLM.from_pretrained(run / "lm")  # adapters merged: a plain transformers checkpoint
    base = AutoModelForCausalLM.from_pretrained(lm_gym.DEFAULT_MODEL)
    assert not (run / "lm" / "adapter_config.json").exists()
    changed = [n for n, p in merged.state_dict().items() if not torch.equal(p, base.state_dict()[n])]
    assert changed and all("c_attn" in n for n in changed)  # only the LoRA-targeted weights moved
    state = load_module(run / "algorithm").state_dict()
    assert any("lora_A" in name for name in state) and "kl_coef" in state


@RAY
def test_an_interrupted_rllib_run_resumes_from_its_last_checkpoint(local_ray, tmp_path, monkeypatch):
    original, calls = Algorithm.train, []

    def interrupted(self):
        calls.append(1)
        if len(calls) == 3:  # after two iterations of 256 steps, and the checkpoint at 512
            raise KeyboardInterrupt("simulated interruption")
        return original(self)

    config = TrainConfig(backend="rllib", algo="ppo", reward="target_word", max_new_tokens=4, steps=1024, n_steps=32,
                         num_env_runners=1, num_envs_per_env_runner=8, checkpoint_every=512, eval_samples=1,
                         out=str(tmp_path / "cut"))
    whole = train(dataclasses.replace(config, out=str(tmp_path / "whole")))
    monkeypatch.setattr(Algorithm, "train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(config)
    monkeypatch.setattr(Algorithm, "train", original)
    (run,) = (tmp_path / "cut").iterdir()
    assert [p.name for p in checkpoint_dirs(run)] == ["step-000000512"] and not (run / "summary.json").exists()
    # Resume as a user does: `lm-gym train --resume RUN`, in a new process that never saw this run's config.
    # With this process's thread count: the learner's float sums depend on it.
    resumed = subprocess.run([sys.executable, "-m", "agents.runs.cli", "train", "--resume", str(run)],
                             capture_output=True, text=True, timeout=600,
                             env={**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed_at"] == 512 and (run / "algorithm").is_dir()
    # The env runners continued their random streams, envs and cut episodes (sampling_state.pt): the resumed run
    # is the uninterrupted one, sample for sample and weight for weight (without it: weights 0.003 apart).
    returns = [[json.loads(line)["episode_return_mean"] for line in (r / "metrics.jsonl").open()] for r in (whole, run)]
    assert returns[0] == returns[1] and len(returns[0]) == 4
    exported = [load_file(r / "lm" / "model.safetensors") for r in (whole, run)]
    assert all(torch.equal(exported[0][name], exported[1][name]) for name in exported[0])
    with pytest.raises(FileExistsError, match="finished already"):
        train(resume=run)
    assert [p.name for p in checkpoint_dirs(run)] == ["step-000000512", "step-000001024"]
    (checkpoint_dirs(run)[-1] / "algorithm" / "rllib_checkpoint.json").unlink()  # a damaged checkpoint says so
    (run / "summary.json").unlink()
    with pytest.raises(CheckpointError, match="cannot resume from .*step-000001024"):
        train(resume=run)


@RAY
def test_compare_puts_rllib_algorithms_next_to_sb3_ones(local_ray, tmp_path):
    main(["compare", "--algos", "ppo,rllib_ppo", "--seeds", "1", "--steps", "512", "--n-envs", "2", "--every", "128",
          "--eval-samples", "1", "--max-new-tokens", "4", "--num-env-runners", "1", "--out", str(tmp_path)])
    (out,) = tmp_path.iterdir()
    rows = [line.split("|")[1].strip() for line in (out / "results.md").read_text().splitlines()[2:]]
    assert rows == ["ppo", "rllib_ppo"]
    results = json.loads((out / "results.json").read_text())["results"]
    assert results["rllib_ppo"][0]["curve"] and results["rllib_ppo"][0]["final"]["episodes"] == 8


class ReviewTurns:
    """A text env defined here (shipped to Ray's env runners by value): three turns continuing a review, each
    paid the VADER sentiment of what the agent wrote in it."""

    def __init__(self):
        self.sentiment, self.turn = lm_gym.make_reward("sentiment"), 0

    def reset(self, seed=None):
        self.turn = 0
        return "the movie was", {}

    def step(self, text):
        self.turn += 1
        reward = float(self.sentiment(["the movie was"], [text], [()])[0])
        return ("" if self.turn >= 3 else "and the story was"), reward, self.turn >= 3, False, {}


@RAY
def test_rllib_ppo_raises_a_per_turn_reward_on_a_multi_turn_env(local_ray):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # env runners cannot import this test file
    env_config = dict(text_env=ReviewTurns, max_tokens=64, max_turn_tokens=5, max_turns=3, reply_template=" {reply}")
    algorithm = rllib_config("ppo", env_config, {}, n_steps=48, learning_rate=1e-3, num_env_runners=2,
                             num_envs_per_env_runner=4, seed=0).build_algo()
    env, held_out = lm_gym.MultiTurnEnv(**env_config), [{"text_env_seed": 10**6 + i} for i in range(16)]

    def held_out_reward():
        torch.manual_seed(0)
        return np.mean([e.reward for e in sample_episodes(trained_module(algorithm), env, held_out, 4)])

    before, steps = held_out_reward(), 0
    while steps < 6144:
        steps = algorithm.train()["env_runners"]["num_env_steps_sampled_lifetime"]
    after = held_out_reward()
    algorithm.stop()
    assert after > before + 0.8, (before, after)


# ----- bad input: each error names the argument and the fix -----


@RAY
def test_a_local_run_starts_its_own_ray_where_ray_start_left_a_cluster_address_behind():
    """`ray start` (and ray.cluster_utils) write the last cluster's address to <temp dir>/ray_current_cluster; a bare
    ray.init() then joins that cluster and refused the run's num_cpus. The run starts its own local Ray instead."""
    temp_dir = tempfile.mkdtemp(prefix="r", dir="/tmp")  # short: Ray's socket paths live under it
    try:
        Path(temp_dir, "ray", "ray_current_cluster").parent.mkdir()
        Path(temp_dir, "ray", "ray_current_cluster").write_text("127.0.0.1:1")  # a cluster that is long gone
        code = ("import ray; from agents.runs.rllib_backend import start_ray; "
                "print(start_ray(None), ray.cluster_resources()['CPU'])")
        started = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                                 env={**os.environ, "RAY_TMPDIR": temp_dir})
        assert started.returncode == 0, started.stderr[-2000:]
        assert started.stdout.split()[-2:] == ["True", f"{float(os.cpu_count())}"]
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_bad_resource_requests_are_refused_before_anything_starts():
    with pytest.raises(ValueError, match="samples asynchronously.*--num-env-runners 1"):
        check_resources("appo", num_env_runners=0, num_learners=0, num_gpus_per_learner=0, cpus=2, gpus=0)
    with pytest.raises(ValueError, match="asks for 2 GPUs but the Ray cluster has 0.*--num-gpus-per-learner"):
        check_resources("ppo", num_env_runners=1, num_learners=2, num_gpus_per_learner=1, cpus=8, gpus=0)
    with pytest.raises(ValueError, match="need 5 CPUs .* has 2.*--num-envs-per-env-runner"):
        check_resources("ppo", num_env_runners=4, num_learners=1, num_gpus_per_learner=0, cpus=2, gpus=0)
    check_resources("impala", num_env_runners=2, num_learners=0, num_gpus_per_learner=0, cpus=2, gpus=0)
    with pytest.raises(ValueError, match="algo='appo' is an rllib algorithm: add --backend rllib"):
        TrainConfig(algo="appo").validate()
    with pytest.raises(ValueError, match="num_env_runners: only the rllib backend takes it; add --backend rllib"):
        TrainConfig(num_env_runners=2).validate()
    with pytest.raises(ValueError, match="backend='ray'"):
        TrainConfig(backend="ray").validate()
    with pytest.raises(ValueError, match="numpy has no bfloat16. Use autocast_dtype='bfloat16'"):
        check_module_config({"dtype": "bfloat16"})
    with pytest.raises(ValueError, match="dtype='float16' without lora"):
        check_module_config({"dtype": "float16"})
    check_module_config({"dtype": "float16", "lora": {"r": 4}, "autocast_dtype": "bfloat16"})


@RAY
def test_a_gpu_request_on_a_cpu_machine_fails_before_training(local_ray, tmp_path, cli_error):
    flags = ["train", "--backend", "rllib", *TASK, "--out", str(tmp_path)]
    assert "GPUs but the Ray cluster has 0" in cli_error(*flags, "--num-gpus-per-learner", "1")
    assert "torch finds no CUDA GPU on this machine; use --device cpu" in cli_error(*flags, "--device", "cuda")
    assert not tmp_path.exists() or not any(tmp_path.iterdir())  # refused before training: no run directory left


def test_without_ray_the_error_names_the_extra_to_install():
    code = "import sys; sys.modules['ray'] = None; import agents.rllib"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode != 0 and "pip install 'lm-gym[rllib]'" in result.stderr


def test_an_unreachable_ray_address_fails_within_seconds():
    # Ray itself retries "Failed to connect to GCS" for minutes, ignoring SIGTERM, before it gives up.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # free once closed: nothing listens there
    start = time.monotonic()
    with pytest.raises(ConnectionError, match=f"ray_address='127.0.0.1:{port}': nothing answers at 127.0.0.1:{port} "
                                              "within 2 s .*Start the head there"):
        check_reachable(f"127.0.0.1:{port}", timeout_s=2)
    with pytest.raises(ConnectionError, match="nothing answers"):
        check_reachable(f"ray://127.0.0.1:{port}", timeout_s=2)
    assert time.monotonic() - start < 10
    with pytest.raises(ValueError, match="ray_address='head-node': give auto .*HOST:PORT"):
        check_reachable("head-node")


@RAY
def test_an_rllib_run_whose_env_runner_hangs_checkpoints_and_resumes(local_ray, tmp_path, monkeypatch):
    """The env runner is the driver's own (num_env_runners=0), so that a patch here reaches it."""
    original, calls = SingleAgentEnvRunner.sample, []

    def hangs_on_the_third(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            time.sleep(3600)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SingleAgentEnvRunner, "sample", hangs_on_the_third)
    config = TrainConfig(backend="rllib", algo="ppo", reward="target_word", max_new_tokens=4, steps=1024, n_steps=32,
                         num_env_runners=0, num_envs_per_env_runner=8, checkpoint_every=0, eval_samples=1,
                         stall_timeout=3, out=str(tmp_path))
    with pytest.raises(TrainingStalled) as stalled:
        train(config)
    (run,) = tmp_path.iterdir()
    # Two iterations of 256 steps finished; the checkpoint holds their state (checkpoints were off otherwise).
    assert stalled.value.step == 512 and stalled.value.checkpoint == run / "checkpoints" / "step-000000512"
    assert "samples from the driver's own env runner" in str(stalled.value) and "CPUs free" in str(stalled.value)
    monkeypatch.setattr(SingleAgentEnvRunner, "sample", original)
    train(resume=run)
    assert json.loads((run / "summary.json").read_text())["resumed_at"] == 512


@RAY
def test_a_linear_lr_schedule_decays_the_learners_rate_to_zero(local_ray, tmp_path):
    run = train(TrainConfig(backend="rllib", algo="ppo", reward="target_word", max_new_tokens=4, steps=1024,
                            n_steps=32, num_env_runners=0, num_envs_per_env_runner=8, learning_rate=1e-3,
                            lr_schedule="linear", checkpoint_every=0, eval_samples=1, out=str(tmp_path)))
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # RLlib's piecewise schedule over env steps, read back from the learner: 1e-3 at 0, 0 at the run's 1,024.
    assert [line["num_env_steps"] for line in lines] == [256, 512, 768, 1024]
    assert [line["learning_rate"] for line in lines] == pytest.approx([7.5e-4, 5e-4, 2.5e-4, 0.0])
