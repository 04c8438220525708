"""Long-run features: config files, checkpoints and exact resume, evaluation, LoRA, bf16, logged samples."""

import errno
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import KVWriter, Logger
from transformers import AutoModelForCausalLM, pipeline

import lm_gym
from agents import LMActorCriticPolicy, SampleLogCallback
from agents.runs.checkpoints import CheckpointError, checkpoint_dirs, save_checkpoint
from agents.runs.cli import main
from agents.runs.evaluate import evaluate_run
from agents.runs.interrupts import TrainingInterrupted
from agents.runs.train import TrainConfig, train

SMALL = dict(steps=384, n_envs=2, n_steps=32, batch_size=32, n_epochs=2, max_new_tokens=4, eval_samples=1,
             checkpoint_every=128, kl_target=1.0, seed=3)


class Crash(BaseCallback):
    def __init__(self, at: int):
        super().__init__()
        self.at = at

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.at:
            raise KeyboardInterrupt("simulated interruption")
        return True


def policy_weights(run):
    return PPO.load(run / "model.zip", device="cpu").policy.state_dict()


def test_interrupted_and_resumed_run_reaches_the_same_weights(tmp_path):
    uninterrupted = train(TrainConfig(**SMALL, out=str(tmp_path / "a")))
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**SMALL, out=str(tmp_path / "b")), callbacks=[Crash(at=300)])
    (interrupted,) = (tmp_path / "b").iterdir()
    assert [p.name for p in checkpoint_dirs(interrupted)] == ["step-000000128", "step-000000256"]
    assert not (interrupted / "model.zip").exists()
    resumed = train(resume=interrupted)
    assert resumed == interrupted
    expected, actual = policy_weights(uninterrupted), policy_weights(resumed)
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0, msg=name)
    summaries = [json.loads((run / "summary.json").read_text()) for run in (uninterrupted, resumed)]
    assert summaries[0]["after"] == summaries[1]["after"] and summaries[1]["resumed_at"] == 256
    with pytest.raises(FileExistsError, match="finished already"):
        train(resume=resumed)

    # SIGTERM (what SLURM and Kubernetes send before killing): a checkpoint at the next rollout boundary, from
    # which the run resumes to the very same weights.
    assert threading.current_thread() is threading.main_thread()  # where Python delivers signals
    with pytest.raises(TrainingInterrupted, match="SIGTERM at step 320") as stopped:
        train(TrainConfig(**SMALL, out=str(tmp_path / "c")), callbacks=[SendSignal(signal.SIGTERM, at=300)])
    assert stopped.value.checkpoint.name == "step-000000320" and stopped.value.exit_code == 143
    resumed = train(resume=stopped.value.checkpoint.parent.parent)
    actual = policy_weights(resumed)
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0, msg=name)


class EpisodeLog(BaseCallback):
    """(step, return, length) of every episode VecMonitor reports."""

    def __init__(self):
        super().__init__()
        self.episodes = []

    def _on_step(self) -> bool:
        self.episodes += [(self.num_timesteps, round(float(i["episode"]["r"]), 5), i["episode"]["l"])
                          for i in self.locals["infos"] if "episode" in i]
        return True


def test_returns_logged_after_a_resume_equal_the_uninterrupted_runs(tmp_path):
    """VecMonitor adds up each running episode's return and length; the checkpoint keeps those sums, so an episode
    that spans the resume is logged whole (dense rewards: a partial return would show), not from the resume on."""
    config = dict(SMALL, max_new_tokens=5, env_options={"reward_mode": "dense"}, kl_target=None)  # 5: one spans 256
    whole, first, second = EpisodeLog(), EpisodeLog(), EpisodeLog()
    train(TrainConfig(**config, out=str(tmp_path / "a")), callbacks=[whole])
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**config, out=str(tmp_path / "b")), callbacks=[first, Crash(at=300)])
    (interrupted,) = (tmp_path / "b").iterdir()
    train(resume=interrupted, callbacks=[second])
    after = [e for e in whole.episodes if e[0] > 256]
    assert len(after) >= 10 and any(r != 0 for _, r, _ in after)
    assert second.episodes == after
    assert [e for e in first.episodes if e[0] <= 256] == [e for e in whole.episodes if e[0] <= 256]


def test_a_run_without_a_terminal_prints_plain_progress_lines(tmp_path):
    """nohup, a batch job, CI: the live bar shows nothing until the end, so plain lines come every 10% of the steps
    (or minute), the last at the end."""
    from io import StringIO

    from rich.console import Console

    output = StringIO()
    train(TrainConfig(**SMALL, out=str(tmp_path)), console=Console(file=output, width=200))
    lines = [line for line in output.getvalue().splitlines() if line.startswith("training: ")]
    assert len(lines) >= 5 and lines[-1].startswith("training: 384/384 steps (100%)"), lines
    assert re.match(r"training: \d+/384 steps \(\d+%\), \d+ s, ~\d+ (s|min) to go", lines[0]), lines[0]
    assert any("episode reward" in line for line in lines)


def test_plain_progress_lines_come_every_tenth_of_the_steps_or_minute():
    from io import StringIO

    from rich.console import Console

    from agents.runs.progress import progress_lines

    output, now = StringIO(), [0.0]
    observe = progress_lines(Console(file=output, width=200), total=1000, clock=lambda: now[0])
    for step in range(1, 1001):
        now[0] = step * (2.0 if step > 500 else 0.01)  # slow at the end: a line a minute, not per 10%
        observe(step, [])
    steps = [int(line.split()[1].split("/")[0]) for line in output.getvalue().splitlines()]
    assert steps[:5] == [100, 200, 300, 400, 500] and steps[-1] == 1000
    slow = steps[5:-1]  # 2 s a step: a line each 60 s, 30 steps apart (10% would be 100)
    assert len(slow) >= 10 and all(b - a == 30 for a, b in zip(slow, slow[1:])), steps


def test_the_newest_checkpoints_are_kept_by_default_and_all_with_keep_checkpoints_0(tmp_path):
    """The default policy wrote 133 MB for one 163,840-step arithmetic run (20 checkpoints); now the newest 3 stay."""
    config = dict(SMALL, steps=640, checkpoint_every=64, eval_samples=0)
    run = train(TrainConfig(**config, out=str(tmp_path / "kept")))
    assert [p.name for p in checkpoint_dirs(run)] == ["step-000000448", "step-000000512", "step-000000576"]
    assert not list((run / "checkpoints").glob(".*"))  # no half-deleted or partial leftovers
    every = train(TrainConfig(**config, keep_checkpoints=0, out=str(tmp_path / "all")))
    assert len(checkpoint_dirs(every)) == 9
    with pytest.raises(KeyboardInterrupt):  # a resume continues from the newest kept one
        train(TrainConfig(**config, out=str(tmp_path / "cut")), callbacks=[Crash(at=600)])
    (cut,) = (tmp_path / "cut").iterdir()
    assert train(resume=cut) == cut and (cut / "summary.json").exists()


def test_a_linear_lr_schedule_decays_to_zero_over_the_run_and_resumes_where_it_was(tmp_path):
    config = dict(SMALL, learning_rate=1e-3, lr_schedule="linear")
    uninterrupted = train(TrainConfig(**config, out=str(tmp_path / "a")))
    model = PPO.load(uninterrupted / "model.zip", device="cpu")
    assert model.lr_schedule(1.0) == 1e-3 and model.lr_schedule(0.5) == pytest.approx(5e-4)
    assert model.policy.optimizer.param_groups[0]["lr"] == 0.0  # the last update's (SB3: progress 0 there)
    assert TrainConfig.from_yaml(uninterrupted / "config.yaml").lr_schedule == "linear"
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**config, out=str(tmp_path / "b")), callbacks=[Crash(at=300)])
    (interrupted,) = (tmp_path / "b").iterdir()
    # Resumed from step 256, the schedule goes on from there: a rate restarted at 1e-3 would end elsewhere.
    expected, actual = policy_weights(uninterrupted), policy_weights(train(resume=interrupted))
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0, msg=name)
    with pytest.raises(ValueError, match="lr_schedule='cosine': choose one of"):
        TrainConfig(lr_schedule="cosine").validate()


class SendSignal(BaseCallback):
    def __init__(self, signum: int, at: int):
        super().__init__()
        self.signum, self.at, self.sent = signum, at, False

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.at and not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.signum)
        return True


def test_sigterm_to_the_cli_checkpoints_and_says_how_to_resume(tmp_path):
    command = [sys.executable, "-m", "agents.runs.cli", "train", "--steps", "1000000", "--n-envs", "2", "--n-steps",
               "32", "--max-new-tokens", "4", "--eval-samples", "1", "--checkpoint-every", "64", "--out", str(tmp_path)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "COLUMNS": "200"})
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("*/checkpoints/step-*")) and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 143, err[-2000:]
    (run,) = tmp_path.iterdir()
    last = checkpoint_dirs(run)[-1]
    assert f"checkpoint {last}; continue with: lm-gym train --resume {run}" in " ".join(out.split())
    assert "SIGTERM: stopping at the end of this rollout" in err and "Traceback" not in err
    assert not (run / "summary.json").exists()


def test_a_full_disk_names_the_run_and_the_last_intact_checkpoint(tmp_path, monkeypatch, cli_error):
    from agents.runs import checkpoints, sb3_backend

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x"))

    flags = ["train", "--steps", "384", "--n-envs", "2", "--n-steps", "32", "--batch-size", "32", "--max-new-tokens", "4",
             "--eval-samples", "1", "--checkpoint-every", "128"]
    monkeypatch.setattr(sb3_backend.SB3Trainer, "save", disk_full)  # the final save
    error = cli_error(*flags, "--out", str(tmp_path / "a"))
    (run,) = (tmp_path / "a").iterdir()
    assert f"could not save the run into {run}: No space left on device" in error
    assert f"the last intact checkpoint is {run}/checkpoints/step-000000256 (lm-gym train --resume {run}" in error
    monkeypatch.undo()
    monkeypatch.setattr(checkpoints, "_write_sb3_checkpoint", disk_full)  # a checkpoint on the way
    error = cli_error(*flags, "--out", str(tmp_path / "b"))
    assert "No space left on device" in error and "no checkpoint was written" in error


def test_a_run_without_held_out_samples_still_saves_everything(tmp_path, capsys):
    main(["train", "--steps", "128", "--n-envs", "2", "--n-steps", "32", "--batch-size", "32", "--max-new-tokens", "4",
          "--eval-samples", "0", "--out", str(tmp_path)])
    (run,) = tmp_path.iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["before"] is None and summary["after"] is None and summary["config"]["eval_samples"] == 0
    assert (run / "model.zip").exists() and (run / "lm" / "model.safetensors").exists()
    assert "no held-out report: eval_samples=0" in capsys.readouterr().out


def test_models_saved_by_lm_gym_0_1_still_load(tmp_path):
    """0.1 kept every module in a flat agents/; SB3's zip names the policy and buffer classes by module path."""
    import base64
    import zipfile

    from agents import EpisodeRolloutBuffer

    model = PPO(LMActorCriticPolicy, lm_gym.make_vec_env(2, seed=0, max_new_tokens=4), n_steps=8, batch_size=16,
                device="cpu", rollout_buffer_class=EpisodeRolloutBuffer)
    old_paths = {LMActorCriticPolicy: "agents.policy", EpisodeRolloutBuffer: "agents.buffers"}
    new_paths = {cls: cls.__module__ for cls in old_paths}
    try:  # pickled by reference, as 0.1 wrote them
        for cls, module in old_paths.items():
            cls.__module__ = module
        model.save(tmp_path / "v0.1.zip")
    finally:
        for cls, module in new_paths.items():
            cls.__module__ = module
    data = json.loads(zipfile.ZipFile(tmp_path / "v0.1.zip").read("data"))
    assert b"agents.policy" in base64.b64decode(data["policy_class"][":serialized:"])
    loaded = PPO.load(tmp_path / "v0.1.zip", device="cpu")
    assert type(loaded.policy) is LMActorCriticPolicy and loaded.rollout_buffer_class is EpisodeRolloutBuffer
    for name, tensor in model.policy.state_dict().items():
        torch.testing.assert_close(loaded.policy.state_dict()[name], tensor)


def test_checkpoints_are_atomic_and_never_overwritten(tmp_path):
    model = PPO(LMActorCriticPolicy, lm_gym.make_vec_env(2, seed=0, max_new_tokens=4), n_steps=8, batch_size=16,
                device="cpu")
    model.learn(16)
    (tmp_path / ".step-000000016.partial").mkdir()  # left by a crash mid-save: replaced, never listed
    path = save_checkpoint(model, tmp_path)
    assert path.name == "step-000000016" and sorted(p.name for p in path.iterdir()) == ["model.zip", "state.pt"]
    assert not (tmp_path / ".step-000000016.partial").exists()
    with pytest.raises(FileExistsError, match="never overwritten"):
        save_checkpoint(model, tmp_path)


def test_corrupted_or_incompatible_checkpoints_get_a_clear_error(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**SMALL, out=str(tmp_path)), callbacks=[Crash(at=150)])
    (run,) = tmp_path.iterdir()
    (checkpoint,) = checkpoint_dirs(run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump({**config, "max_new_tokens": 6}))  # another observation space
    with pytest.raises(CheckpointError, match="another configuration"):
        train(resume=run)
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    data = (checkpoint / "model.zip").read_bytes()
    (checkpoint / "model.zip").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupted"):
        train(resume=run)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        (tmp_path / "empty").mkdir()
        (tmp_path / "empty" / "config.yaml").write_text(yaml.safe_dump(config))
        train(resume=tmp_path / "empty")


def test_yaml_config_with_flag_overrides_and_a_dataset(tmp_path, cli_error):
    import datasets

    data = tmp_path / "data"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["the movie was", "the plot"]}),
                          "test": datasets.Dataset.from_dict({"text": ["the acting"]})}).save_to_disk(str(data))
    config = {**SMALL, "steps": 64, "checkpoint_every": 0, "prompts": str(data), "prompt_column": "text",
              "eval_split": "test", "out": str(tmp_path / "runs")}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(config))
    main(["train", "--config", str(tmp_path / "cfg.yaml"), "--seed", "7"])
    (run,) = (tmp_path / "runs").iterdir()
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["seed"] == 7 and resolved["prompt_column"] == "text" and resolved["steps"] == 64
    summary = json.loads((run / "summary.json").read_text())
    assert {s["prompt"] for s in summary["samples_after"]} == {"the acting"}  # the held-out split
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"stepz": 10}))
    assert "unknown keys ['stepz']" in cli_error("train", "--config", str(tmp_path / "bad.yaml"))
    assert "takes no other options" in cli_error("train", "--resume", str(run), "--steps", "10")


def test_held_out_prompts_come_from_the_first_source_given(tmp_path):
    records = [{"prompt": f"review {i}", "references": [f"ref {i}"]} for i in range(10)]
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    (tmp_path / "eval.txt").write_text("the acting\n")
    train_set, held_out = TrainConfig(prompts=str(tmp_path / "p.jsonl"), eval_fraction=0.2, seed=1).prompt_sets()
    assert len(train_set) == 8 and len(held_out) == 2 and not set(train_set) & set(held_out)
    assert held_out[0].references == (held_out[0].text.replace("review", "ref"),)
    assert TrainConfig(prompts=str(tmp_path / "p.jsonl"), eval_fraction=0.2, seed=1).prompt_sets()[1] == held_out
    _, explicit = TrainConfig(prompts=str(tmp_path / "p.jsonl"), eval_prompts=str(tmp_path / "eval.txt"),
                              eval_fraction=0.2).prompt_sets()
    assert [p.text for p in explicit] == ["the acting"]
    assert TrainConfig().prompt_sets()[1] == lm_gym.load_prompts(lm_gym.HELDOUT_PROMPTS)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    # 2 rollouts: SB3 dumps an update's train/* values at the start of the next iteration
    return train(TrainConfig(**{**SMALL, "steps": 128, "checkpoint_every": 0}, out=str(tmp_path_factory.mktemp("runs"))))


def test_tensorboard_gets_reward_kl_entropy_and_sample_text(finished_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert sorted(p.name for p in (finished_run / "tensorboard").iterdir()) == ["held_out", "train_1"]
    events = EventAccumulator(str(finished_run / "tensorboard" / "train_1"), size_guidance={"tensors": 0}).Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"rollout/ep_rew_mean", "kl/per_episode", "kl/coef", "train/entropy_loss"} <= scalars
    texts = events.Tensors("rollout/samples/text_summary")
    assert len(texts) == 2  # one table per rollout
    assert all(b"| prompt | completion | reward |" in t.tensor_proto.string_val[0] for t in texts)
    # The held-out before/after, next to the training curves.
    held_out = EventAccumulator(str(finished_run / "tensorboard" / "held_out"), size_guidance={"tensors": 0}).Reload()
    summary = json.loads((finished_run / "summary.json").read_text())
    rewards = held_out.Scalars("held_out/reward_mean")
    assert [(e.step, round(e.value, 5)) for e in rewards] == [
        (0, round(summary["before"]["reward_mean"], 5)), (128, round(summary["after"]["reward_mean"], 5))]
    assert b"| prompt | completion | reward |" in held_out.Tensors("held_out/samples_after/text_summary")[0].tensor_proto.string_val[0]


def test_evaluate_reports_every_metric(finished_run, tmp_path):
    run = finished_run
    result = evaluate_run(run, samples=4)
    stats = result["stats"]
    assert {"reward_mean", "kl_mean", "perplexity", "distinct_1", "distinct_2", "eos_rate"} <= set(stats)
    assert stats["perplexity"] > 1 and 0 <= stats["eos_rate"] <= 1 and stats["episodes"] == 8 * 4
    assert 0 < stats["distinct_1"] <= 1 and 0 < stats["distinct_2"] <= 1
    (written,) = run.glob("evaluation-*.json")
    assert json.loads(written.read_text())["stats"] == stats
    prompts = tmp_path / "p.txt"
    prompts.write_text("the story\n")
    assert {s["prompt"] for s in evaluate_run(run, prompts=prompts, samples=2)["samples"]} == {"the story"}
    with pytest.raises(FileNotFoundError, match="not an lm-gym run"):
        evaluate_run(tmp_path)


def test_lora_trains_adapters_only_and_uses_the_base_model_as_reference(tmp_path):
    env = lm_gym.make_vec_env(2, seed=0, max_new_tokens=4)
    model = PPO(LMActorCriticPolicy, env, n_steps=16, batch_size=32, seed=0, device="cpu", learning_rate=1e-2,
                policy_kwargs={"lora": {"r": 4, "lora_alpha": 8, "target_modules": ["c_attn"]}})
    policy = model.policy
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("value_head") for n in trainable)
    base = {n: p.detach().clone() for n, p in policy.named_parameters() if not p.requires_grad}
    reference = policy.load_reference_model()
    assert sum(p.numel() for p in reference.parameters()) == 0  # no second copy of the LM
    model.learn(64)
    assert all(torch.equal(base[n], p) for n, p in policy.named_parameters() if n in base)  # base frozen
    obs = {k: torch.as_tensor(v) for k, v in env.reset().items()}
    plain = AutoModelForCausalLM.from_pretrained(lm_gym.DEFAULT_MODEL).eval()
    with torch.no_grad():
        ids, mask = obs["input_ids"], obs["attention_mask"]
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        ref_logits = reference(input_ids=ids, attention_mask=mask, position_ids=pos).logits
        torch.testing.assert_close(ref_logits, plain(input_ids=ids, attention_mask=mask, position_ids=pos).logits)
        trained = policy.get_distribution(obs).distribution.logits
    assert not torch.allclose(trained.log_softmax(-1), ref_logits[:, -1].log_softmax(-1), atol=1e-3)  # adapters moved it
    path = policy.save_pretrained(tmp_path / "lm")  # adapters merged: a plain transformers checkpoint
    merged = AutoModelForCausalLM.from_pretrained(path).eval()
    with torch.no_grad():
        merged_logits = merged(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1, : trained.shape[-1]]
    torch.testing.assert_close(merged_logits.log_softmax(-1), trained.log_softmax(-1), atol=1e-4, rtol=1e-4)
    assert pipeline("text-generation", model=str(path), device="cpu")("the movie was", max_new_tokens=2)
    model.save(tmp_path / "ppo.zip")
    loaded = PPO.load(tmp_path / "ppo.zip", device="cpu")
    with torch.no_grad():
        torch.testing.assert_close(loaded.policy.get_distribution(obs).distribution.logits, trained)


@pytest.mark.parametrize("policy_kwargs, lm_dtype", [
    ({"dtype": "bfloat16"}, torch.bfloat16),
    ({"autocast_dtype": "bfloat16"}, torch.float32),
    ({"dtype": "float16", "lora": {"r": 4, "target_modules": ["c_attn"]}}, torch.float16),  # frozen fp16 base
])
def test_half_precision_trains_without_nan(policy_kwargs, lm_dtype):
    model = PPO(LMActorCriticPolicy, lm_gym.make_vec_env(2, seed=0, max_new_tokens=4), n_steps=16, batch_size=32,
                seed=0, device="cpu", learning_rate=1e-3, policy_kwargs=policy_kwargs)
    before = {n: p.detach().clone() for n, p in model.policy.named_parameters() if p.requires_grad}
    model.learn(64)
    assert next(model.policy.lm.parameters()).dtype == lm_dtype
    assert all(p.dtype == torch.float32 for n, p in model.policy.named_parameters() if "lora_" in n or "value" in n)
    assert all(torch.isfinite(p).all() for p in model.policy.parameters())
    assert torch.isfinite(torch.as_tensor(model.rollout_buffer.log_probs)).all()
    assert any(not torch.equal(before[n], p) for n, p in model.policy.named_parameters() if n in before)


@pytest.mark.parametrize("policy_kwargs, message", [
    ({"dtype": "float16"}, "dtype='float16' without lora"),
    ({"autocast_dtype": "float16"}, "autocast_dtype='float16'"),
    ({"dtype": "bf16"}, "dtype='bf16' is not a torch floating dtype"),
])
def test_unsafe_or_unknown_precision_is_refused(policy_kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        PPO(LMActorCriticPolicy, lm_gym.make_vec_env(1, max_new_tokens=4), policy_kwargs=policy_kwargs)


def test_sample_completions_reach_the_logger_as_text():
    class Capture(KVWriter):
        def __init__(self):
            self.records = []

        def write(self, key_values, key_excluded, step=0):
            self.records.append({k: v for k, v in key_values.items() if "tensorboard" not in key_excluded.get(k, ())})

    capture = Capture()
    model = PPO(LMActorCriticPolicy, lm_gym.make_vec_env(2, seed=0, max_new_tokens=4), n_steps=16, batch_size=32,
                device="cpu")
    model.set_logger(Logger(folder=None, output_formats=[capture]))
    model.learn(32, callback=SampleLogCallback(n_samples=2))
    texts = [r["rollout/samples"] for r in capture.records if "rollout/samples" in r]
    assert texts and texts[0].startswith("| prompt | completion | reward |") and texts[0].count("\n") == 3


# The recipe's minibatch of 256 is sized for its real rollout; the stand-in run's rollout is 32 steps.
@pytest.mark.filterwarnings("ignore:You have specified a mini-batch size")
def test_hub_recipe_runs_unchanged_on_local_stand_ins(tmp_path, classifier_dir):
    """examples/hub_recipe.py with its hub names swapped for local paths: GPT-2 -> the bundled tiny GPT-2
    (a local directory), DistilBERT-IMDB -> a tiny POSITIVE/NEGATIVE classifier, IMDB -> a saved dataset of
    long reviews (so truncation to 8 prompt tokens is exercised)."""
    import datasets

    sys.path.insert(0, str(Path(__file__).parents[1] / "examples"))
    import hub_recipe

    reviews = ["this film was a wonderful surprise from start to finish and the cast is superb",
               "i did not expect much from this movie but the story kept me watching until the very end"]
    imdb = tmp_path / "imdb"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": reviews, "label": [1, 0]}),
                          "test": datasets.Dataset.from_dict({"text": reviews[::-1] * 3, "label": [0, 1] * 3})}
                         ).save_to_disk(str(imdb))
    run = hub_recipe.main(["--policy", str(lm_gym.DEFAULT_MODEL), "--classifier", classifier_dir, "--dataset",
                           str(imdb), "--eval-split", "test[:2]", "--steps", "64", "--n-envs", "2", "--lora",
                           "--out", str(tmp_path / "runs")])
    config = TrainConfig.from_yaml(run / "config.yaml")
    expected = hub_recipe.recipe(str(lm_gym.DEFAULT_MODEL), classifier_dir, str(imdb), "train", "test[:2]", 64, 2,
                                 True, str(tmp_path / "runs"))
    assert config == expected and config.kl_target == 6.0 and config.reward == "classifier"
    summary = json.loads((run / "summary.json").read_text())
    tokenizer = lm_gym.load_tokenizer()
    prompts = {s["prompt"] for s in summary["samples_after"]}
    assert len(prompts) == 2 and all(len(tokenizer(p)["input_ids"]) == 8 for p in prompts)  # truncated
    assert all(reviews[1].startswith(p) or reviews[0].startswith(p) for p in prompts)
    assert (run / "model.zip").exists() and (run / "lm" / "config.json").exists()
