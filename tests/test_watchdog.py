"""The stall watchdog: a run whose env steps stop coming ends with a message naming what it waited for and the
checkpoint to resume from, on both backends, instead of hanging."""

import copy
import pickle
import re
import signal
import threading
import time
from pathlib import Path

import pytest

from agents.runs.checkpoints import checkpoint_dirs
from agents.runs.cli import main
from agents.runs.interrupts import TrainingInterrupted, raised_by_signal
from agents.runs.train import TrainConfig, train
from agents.runs.watchdog import FIRST_LIMIT_S, MIN_LIMIT_S, StallWatchdog, TrainingStalled
from lm_gym.rewards import REWARDS, FunctionReward


def test_the_limit_follows_the_longest_wait_and_a_pause_is_not_a_stall():
    stalls = []
    watchdog = StallWatchdog(None, lambda: "nothing", stalls.append)
    assert watchdog.limit_s == FIRST_LIMIT_S  # nothing to go by yet
    watchdog.last -= 3.0
    watchdog.beat(8)
    assert watchdog.limit_s == MIN_LIMIT_S  # 10 x 3 s is under the floor
    watchdog.last -= 20.0
    watchdog.beat(16)
    assert watchdog.limit_s == pytest.approx(200.0, rel=0.01)
    watchdog.beat(16)  # no new steps: no progress
    assert watchdog.longest_wait == pytest.approx(20.0, rel=0.01)
    with StallWatchdog(0.3, lambda: "a test", stalls.append, poll_s=0.05) as paused:
        paused.pause()
        time.sleep(0.6)
        assert not stalls
        paused.resume()
        time.sleep(0.6)
    (stall,) = stalls
    assert "no env steps for" in str(stall) and "Waiting for: a test" in str(stall) and stall.step == 0
    with pytest.raises(ValueError, match="stall_timeout=-1"):
        StallWatchdog(-1, str, stalls.append)


def test_a_stop_survives_the_copies_and_wrapping_ray_puts_it_through():
    """Raised by a signal handler inside ``ray.wait`` it comes back as a SystemError caused by it, which Ray's
    ``Trainable.train`` copies; both stops must copy (and pickle) whole and be found in the chain."""
    stall = TrainingStalled(512, 4.0, 3.0, "samples from 2 env runners", Path("run/checkpoints/step-000000512"))
    interrupted = TrainingInterrupted(signal.SIGINT, 512, Path("run/checkpoints/step-000000512"))
    for stop in (stall, interrupted):
        for twin in (copy.copy(stop), pickle.loads(pickle.dumps(stop))):
            assert type(twin) is type(stop) and str(twin) == str(stop) and twin.checkpoint == stop.checkpoint
        try:
            try:
                raise stop
            except BaseException as cause:
                raise SystemError("<cyfunction CoreWorker.wait> returned a result with an exception set") from cause
        except SystemError as wrapped:
            assert raised_by_signal(wrapped) is stop and raised_by_signal(ValueError("x")) is None


def slow_on_call(call: int, seconds: float):
    """A reward that answers at once, except on call number ``call``, which takes ``seconds`` (3600: a remote scorer
    that stopped responding; a few: one that recovers)."""
    count = [0]

    def reward(prompt: str, completion: str) -> float:
        count[0] += 1
        if count[0] == call:
            time.sleep(seconds)
        return 0.0

    return reward


def test_an_sb3_run_whose_env_step_hangs_stops_with_the_watchdogs_message(tmp_path, monkeypatch, capsys):
    # 160 episodes of 4 tokens on 8 envs: step 640, in the second rollout of 512 steps.
    monkeypatch.setitem(REWARDS, "hangs", lambda: FunctionReward(slow_on_call(161, seconds=3600)))
    start = time.monotonic()
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--reward", "hangs", "--max-new-tokens", "4", "--steps", "4096", "--n-steps", "64",
              "--checkpoint-every", "512", "--eval-samples", "0", "--stall-timeout", "3", "--out", str(tmp_path)])
    assert exit_.value.code == 1 and time.monotonic() - start < 120
    message = capsys.readouterr().err.strip().splitlines()[-1]
    (run,) = tmp_path.iterdir()
    checkpoint = checkpoint_dirs(run)[-1]
    assert re.match(r"lm-gym train: training stalled at step \d+: no env steps for \d+ s \(limit 3 s", message)
    assert "an env step that never returned" in message and "in reward (" in message  # where it hangs
    assert f"the last checkpoint is {checkpoint} (continue with: lm-gym train --resume {run})" in message


def test_a_run_off_the_main_thread_reports_a_stall_without_interrupting_the_main_thread(tmp_path, monkeypatch,
                                                                                           capsys):
    """Signals reach the main thread only: there a stall would be a bare KeyboardInterrupt in unrelated code."""
    monkeypatch.setitem(REWARDS, "slow_once", lambda: FunctionReward(slow_on_call(64, seconds=5)))
    config = TrainConfig(reward="slow_once", max_new_tokens=4, steps=1024, n_steps=64, eval_samples=0,
                         checkpoint_every=0, stall_timeout=2, out=str(tmp_path))
    worker = threading.Thread(target=train, args=(config,))
    worker.start()
    worker.join(timeout=300)  # a KeyboardInterrupt here would fail the test
    assert not worker.is_alive() and (next(tmp_path.iterdir()) / "summary.json").exists()  # the run went on
    assert "training stalled at step" in capsys.readouterr().err


def test_a_comparison_whose_run_hangs_stops_with_the_watchdogs_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(REWARDS, "hangs", lambda: FunctionReward(slow_on_call(161, seconds=3600)))
    start = time.monotonic()
    with pytest.raises(SystemExit) as exit_:
        main(["compare", "--algos", "ppo", "--seeds", "1", "--reward", "hangs", "--max-new-tokens", "4", "--steps",
              "4096", "--n-steps", "64", "--eval-samples", "1", "--stall-timeout", "3", "--out", str(tmp_path)])
    assert exit_.value.code == 1 and time.monotonic() - start < 120
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.match(r"lm-gym compare: training stalled at step \d+: no env steps for \d+ s \(limit 3 s", message)
    assert "an env step that never returned" in message and "in reward (" in message
