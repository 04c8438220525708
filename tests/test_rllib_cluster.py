"""The multi-machine path on a local multi-node Ray cluster (``ray.cluster_utils.Cluster``): the head has no CPUs,
so every env runner runs on another node, as on a cluster whose head only drives. RLlib PPO with KL shaping and
IMPALA train there, the export opens, ``--resume`` continues, and losing a node mid-run neither hangs nor loses
the run. (``scripts/check_cluster_commands.sh`` runs the README's ``ray start`` commands, token auth included.)"""

import json
import time

import pytest
import ray
import torch
from ray.cluster_utils import Cluster
from ray.rllib.algorithms.algorithm import Algorithm
from transformers import AutoModelForCausalLM

from agents.runs.train import TrainConfig, train
from agents.runs.watchdog import TrainingStalled
from lm_gym import DEFAULT_MODEL

pytestmark = pytest.mark.xdist_group("ray")  # one Ray at a time per worker: the other RLlib tests share theirs
TASK = dict(backend="rllib", reward="target_word", max_new_tokens=4, n_steps=32, eval_samples=1, num_env_runners=2,
            num_envs_per_env_runner=4)


@pytest.fixture(scope="module")
def cluster():
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    cluster.add_node(num_cpus=2)
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def placed_off_the_head(summary: dict) -> bool:
    head = next(node for node in summary["cluster"]["nodes"] if node["cpus"] == 0)
    return all(runner["node_id"] != head["node_id"] for runner in summary["cluster"]["env_runners"])


def test_ppo_with_kl_shaping_trains_on_another_node_exports_and_resumes(cluster, tmp_path, monkeypatch):
    original, calls = Algorithm.train, []

    def interrupted(self):
        calls.append(1)
        if len(calls) == 3:  # after two iterations of 256 steps and the checkpoint at 512
            raise KeyboardInterrupt("simulated interruption")
        return original(self)

    monkeypatch.setattr(Algorithm, "train", interrupted)
    config = TrainConfig(**TASK, algo="ppo", steps=1024, kl_coef=0.05, checkpoint_every=512, out=str(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        train(config)
    monkeypatch.setattr(Algorithm, "train", original)
    (run,) = tmp_path.iterdir()
    train(resume=run)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed_at"] == 512 and len(summary["cluster"]["nodes"]) == 2 and placed_off_the_head(summary)
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["num_env_steps"] >= 1024 and all("kl/per_episode" in line for line in metrics)
    assert AutoModelForCausalLM.from_pretrained(run / "lm").config.n_layer == 2


def test_impala_trains_on_another_node(cluster, tmp_path):
    run = train(TrainConfig(**TASK, algo="impala", steps=1024, checkpoint_every=0, out=str(tmp_path)))
    summary = json.loads((run / "summary.json").read_text())
    trained, initial = (AutoModelForCausalLM.from_pretrained(path).state_dict() for path in (run / "lm", DEFAULT_MODEL))
    assert placed_off_the_head(summary) and any(not torch.equal(trained[k], initial[k]) for k in initial)


def test_an_env_runner_on_another_node_that_hangs_ends_in_the_watchdogs_message_and_a_checkpoint(cluster, tmp_path,
                                                                                                monkeypatch):
    original, calls = Algorithm.train, []

    def hangs_on_the_third(self):
        calls.append(1)
        if len(calls) == 3:  # the remote env runners' next sample() never returns (they run on the other node)
            def hang(runner):
                runner.sample = lambda *args, **kwargs: time.sleep(3600)
            self.env_runner_group.foreach_env_runner(hang, local_env_runner=False)
        return original(self)

    monkeypatch.setattr(Algorithm, "train", hangs_on_the_third)
    monkeypatch.setattr("agents.runs.rllib_backend.STATE_TIMEOUT_S", 2)  # the hung runners cannot give theirs
    # 15 s: far above an iteration here (about a second), even on a loaded machine
    config = TrainConfig(**TASK, algo="ppo", steps=1024, checkpoint_every=0, stall_timeout=15, out=str(tmp_path))
    start = time.monotonic()
    with pytest.raises(TrainingStalled) as stalled:
        train(config)
    (run,) = tmp_path.iterdir()
    assert stalled.value.step == 512 and stalled.value.checkpoint == run / "checkpoints" / "step-000000512"
    assert "samples from 2 env runners" in str(stalled.value) and time.monotonic() - start < 180
    monkeypatch.setattr(Algorithm, "train", original)
    train(resume=run)  # new env runners; the checkpoint has no sampling state for the hung ones (a warning says so)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed_at"] == 512 and (run / "lm" / "config.json").exists()


def test_losing_a_node_mid_run_takes_its_env_runners_out_and_the_run_goes_on(cluster, tmp_path, monkeypatch):
    """What RLlib 2.60 does (README, "No silent stalls"): the lost node's env runners are taken out of service, the
    iteration goes on with the others' samples, and Ray restarts them on the node that is left (5 s delay)."""
    cluster.add_node(num_cpus=2)  # room for the env runners of the node that will go
    cluster.wait_for_nodes()
    original, calls = Algorithm.train, []

    def losing_a_node(self):
        calls.append(1)
        if len(calls) == 3:
            busy = {runner["node_id"] for runner in self.env_runner_group.foreach_env_runner(
                lambda r: {"node_id": ray.get_runtime_context().get_node_id()}, local_env_runner=False)}
            lost = next(node for node in cluster.worker_nodes if node.node_id in busy)
            cluster.remove_node(lost)  # a machine of the cluster goes away, with the env runners on it
        return original(self)

    monkeypatch.setattr(Algorithm, "train", losing_a_node)
    config = TrainConfig(**TASK, algo="ppo", steps=2048, checkpoint_every=512, stall_timeout=60, out=str(tmp_path))
    start = time.monotonic()
    run = train(config)  # a TrainingStalled here (its message names the checkpoint) would fail the test
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["num_env_steps"] >= 2048 and len(metrics) > 3  # iterations after the loss
    assert (run / "lm" / "config.json").exists() and time.monotonic() - start < 120
