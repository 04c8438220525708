"""SampleLogCallback: a few completions of each rollout, as text, to SB3's logger (TensorBoard shows them)."""

from __future__ import annotations

from stable_baselines3.common.callbacks import BaseCallback

TEXT_ONLY = ("stdout", "log", "json", "csv")  # the table writers cannot show long text: TensorBoard only


class SampleLogCallback(BaseCallback):
    """Records ``rollout/samples``: up to ``n_samples`` episodes finished in the rollout, as markdown.

    Reward, KL, coefficient and entropy already reach the logger (``rollout/ep_rew_mean``, ``kl/*``,
    ``train/entropy_loss``); this adds what they stand for.
    """

    def __init__(self, n_samples: int = 4):
        super().__init__()
        self.n_samples = n_samples
        self.samples: list[tuple[str, str, float]] = []

    def _on_rollout_start(self) -> None:
        self.samples = []

    def _on_step(self) -> bool:
        for info in self.locals["infos"]:
            if "episode" in info and len(self.samples) < self.n_samples:
                self.samples.append((info["prompt"], info["completion"], float(info["episode"]["r"])))
        return True

    def _on_rollout_end(self) -> None:
        if self.samples:
            rows = [f"| {p} | {c} | {r:+.3f} |" for p, c, r in self.samples]
            text = "\n".join(["| prompt | completion | reward |", "|---|---|---|", *rows])
            self.logger.record("rollout/samples", text, exclude=TEXT_ONLY)
