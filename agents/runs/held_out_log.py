"""The held-out before/after metrics and samples of a run, as TensorBoard scalars and text next to the
training curves (``RUN/tensorboard/held_out``), so that ``tensorboard --logdir RUN/tensorboard`` shows both."""

from __future__ import annotations

from pathlib import Path

SCALARS = ("reward_mean", "kl_mean", "distinct_2", "length_mean")


def log_held_out(run_dir: Path, before: dict, after: dict, samples_after: list[dict], steps: int) -> bool:
    """Write ``held_out/*`` at step 0 (before) and ``steps`` (after); False when the run has no TensorBoard."""
    if not (run_dir / "tensorboard").is_dir():
        return False
    from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package, as the directory shows

    with SummaryWriter(str(run_dir / "tensorboard" / "held_out")) as writer:
        for step, stats in ((0, before), (steps, after)):
            for key in SCALARS:
                writer.add_scalar(f"held_out/{key}", stats[key], step)
        rows = "\n".join(f"| {s['prompt']} | {s['completion']} | {s['reward']:+.2f} |" for s in samples_after[:16])
        writer.add_text("held_out/samples_after", f"| prompt | completion | reward |\n|---|---|---|\n{rows}", steps)
    return True
