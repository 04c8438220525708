"""The Hugging Face model card of a run's ``lm/``: what was trained, how, and how well (``lm/README.md``).

The Hub and ``huggingface_hub.ModelCard.load`` read the YAML metadata at the top; people read the rest.
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from agents.runs.config import ALGORITHM_HYPERPARAMETERS, TrainConfig
from lm_gym.models import ASSETS_DIR

HYPERPARAMETERS = ("steps", "n_envs", *ALGORITHM_HYPERPARAMETERS, "lr_schedule", "group_size", "kl_coef", "kl_target",
                   "lora", "dtype", "seed")


def base_model(config: TrainConfig) -> tuple[str | None, str]:
    """(the hub id for the card's ``base_model`` metadata, or None for a local LM; how the text names it)."""
    lm = config.lm
    if lm is None or Path(lm).resolve().is_relative_to(ASSETS_DIR):
        name = "tiny-lm" if lm is None else Path(lm).name
        return None, f"lm-gym's bundled `{name}` (built offline by the project's scripts)"
    if Path(lm).expanduser().exists():
        return None, f"the local model `{lm}`"
    return lm, f"[`{lm}`](https://huggingface.co/{lm})"


def write_model_card(run_dir: Path, config: TrainConfig, summary: dict) -> Path:
    """Write ``run_dir/lm/README.md`` from the run's resolved config and held-out results."""
    hub_id, base = base_model(config)
    metadata = ModelCardData(library_name="transformers", pipeline_tag="text-generation", base_model=hub_id,
                             tags=["lm-gym", "reinforcement-learning", config.algo, config.env])
    task = config.suite_task
    rows = ["| | reward | KL to initial LM (nats) | tokens |", "|---|---|---|---|"]
    for name in ("before", "after"):
        stats = summary[name]
        if stats is not None:
            rows.append(f"| {name} | {stats['reward_mean']:.3f} ± {stats['reward_std']:.3f} | {stats['kl_mean']:.2f} "
                        f"| {stats['length_mean']:.1f} |")
    if task is not None:
        rows.append(f"| optimum ({task.solver}) | {task.optimum:.3f} | | |")
    results = "\n".join(rows) if len(rows) > 2 else "No held-out evaluation (`eval_samples: 0`)."
    reward = "the task's own (its text env pays the rewards)" if config.task.multi_turn else f"`{config.reward}`"
    values = "\n".join(f"| `{name}` | {getattr(config, name)} |" for name in HYPERPARAMETERS
                       if getattr(config, name) is not None)
    body = f"""
# {config.algo.upper()} on {config.env}

Fine-tuned with reinforcement learning by [lm-gym](https://pypi.org/project/lm-gym/) from {base}: the
{config.backend} backend's `{config.algo}` on `{config.env}`, reward {reward}, {summary['train_seconds']:.0f} s of
training.

## Results on held-out {'instances' if config.task.multi_turn else 'prompts'}

{results}

## Hyperparameters (resolved)

| | |
|---|---|
{values}

## Reproduce

```
lm-gym train --config config.yaml   # the run's config.yaml, next to this lm/ directory
```

## Use

The saved `generation_config` samples as the policy did during training (the full softmax: `top_k=0`).

```python
from transformers import pipeline
generate = pipeline("text-generation", model="PATH/TO/lm")
```
"""
    card = ModelCard(f"---\n{metadata.to_yaml()}\n---\n{body}")
    path = run_dir / "lm" / "README.md"
    card.save(path)
    return path
