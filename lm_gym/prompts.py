"""Prompt sources: a list of strings or records, a .txt file (one prompt a line) or a .jsonl file."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lm_gym.models import ASSETS_DIR

DEFAULT_PROMPTS = ASSETS_DIR / "prompts_train.txt"
HELDOUT_PROMPTS = ASSETS_DIR / "prompts_eval.txt"


@dataclass(frozen=True)
class Prompt:
    """A prompt and, for reference-based rewards (ROUGE, BLEU), the reference completions that go with it."""

    text: str
    references: tuple[str, ...] = field(default=())


PromptSource = str | os.PathLike | Iterable[str | Mapping | Prompt] | None


def load_prompts(source: PromptSource = None) -> list[Prompt]:
    """Read prompts from ``source``.

    - ``None``: the bundled training prompts (review openings).
    - a path to a ``.txt`` file (one prompt a line, blank lines skipped) or a ``.jsonl`` file whose
      records have a ``"prompt"`` and optionally ``"references"`` (a string or a list of strings).
    - an iterable of strings, of such records (dicts), or of :class:`Prompt`.
    """
    if source is None:
        source = DEFAULT_PROMPTS
    if isinstance(source, (str, os.PathLike)):
        prompts = _read_file(Path(source))
    else:
        prompts = [_to_prompt(item, where=f"prompts[{i}]") for i, item in enumerate(source)]
    if not prompts:
        raise ValueError(f"prompts={source!r} holds no prompts; pass at least one non-empty prompt.")
    return prompts


def _read_file(path: Path) -> list[Prompt]:
    if not path.is_file():
        raise FileNotFoundError(
            f"prompts={str(path)!r} is not a file. Pass a .txt/.jsonl path, or a list of prompt strings."
        )
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if path.suffix == ".jsonl":
        return [_to_prompt(json.loads(line), where=f"{path}:{n}") for n, line in enumerate(lines, 1)]
    if path.suffix in (".txt", ""):
        return [Prompt(line) for line in lines]
    raise ValueError(f"prompts={str(path)!r}: unsupported file type {path.suffix!r}; use .txt or .jsonl.")


def _to_prompt(item: str | Mapping | Prompt, where: str) -> Prompt:
    if isinstance(item, Prompt):
        return item
    if isinstance(item, str):
        return Prompt(item)
    if isinstance(item, Mapping) and isinstance(item.get("prompt"), str):
        references = item.get("references", ())
        references = (references,) if isinstance(references, str) else tuple(references)
        return Prompt(item["prompt"], references)
    raise ValueError(f"{where}: expected a string or a record with a 'prompt' string, got {item!r}.")
