"""Smoke test of an installed (non-editable) lm-gym wheel, run from outside the source tree by .ci/run.

Every registered lm-gym env resets and runs an episode from its bundled assets, and `lm-gym train` finishes a
short run on the default task, all from site-packages: an asset missing from the wheel fails here, while an
editable install would hide it.
"""

import subprocess
import sys
import tempfile
from pathlib import Path

import gymnasium as gym

import lm_gym

source_tree = Path(sys.argv[1]).resolve()
installed = Path(lm_gym.__file__).resolve()
if source_tree in installed.parents:
    sys.exit(f"lm_gym was imported from the source tree ({installed}), not from the installed wheel.")

class Echo:
    """A text env for TextGen-MultiTurn-v0, the one registered env that needs an argument."""

    def reset(self, seed=None):
        self.turns = 0
        return "say something", {}

    def step(self, text):
        self.turns += 1
        return f"you said {text}", 1.0, self.turns == 2, False, {}


ARGUMENTS = {"TextGen-MultiTurn-v0": {"text_env": Echo, "max_tokens": 48, "max_turn_tokens": 4}}
ids = [env_id for env_id, spec in gym.registry.items() if str(spec.entry_point).startswith("lm_gym")]
assert ids, "no lm-gym env is registered"
for env_id in ids:
    env = gym.make(env_id, **ARGUMENTS.get(env_id, {}))
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs), env_id
    steps, done = 0, False
    while not done:
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        done, steps = terminated or truncated, steps + 1
    print(f"{env_id}: reset and {steps} steps from {installed.parent}")

with tempfile.TemporaryDirectory() as out:
    subprocess.run(["lm-gym", "train", "--steps", "512", "--eval-samples", "1", "--checkpoint-every", "0",
                    "--out", out], check=True)
    run = next(Path(out).iterdir())
    for name in ("model.zip", "lm/config.json", "summary.json"):
        assert (run / name).exists(), f"lm-gym train did not write {name}"
print("wheel smoke test passed")
