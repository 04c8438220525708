"""Prompt sources: a list of strings or records, a .txt or .jsonl file, or a Hugging Face dataset."""

from __future__ import annotations

import json
import os
import random
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


PromptSource = str | os.PathLike | Mapping | Iterable[str | Mapping | Prompt] | None


def load_prompts(source: PromptSource = None) -> list[Prompt]:
    """Read prompts from ``source``.

    - ``None``: the bundled training prompts (review openings).
    - a path to a ``.txt`` file (one prompt a line, blank lines skipped) or a ``.jsonl`` file whose
      records have a ``"prompt"`` and optionally ``"references"`` (a string or a list of strings).
    - ``{"dataset": name_or_path, "column": "text", "split": "train", "references_column": None}``:
      a Hugging Face dataset (see :func:`dataset_prompts`).
    - an iterable of strings, of such records (dicts), or of :class:`Prompt`.
    """
    if source is None:
        source = DEFAULT_PROMPTS
    if isinstance(source, Mapping) and "dataset" in source:
        prompts = dataset_prompts(**source)
    elif isinstance(source, (str, os.PathLike)):
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
    if path.suffix not in (".jsonl", ".txt", ""):
        raise ValueError(f"prompts={str(path)!r}: unsupported file type {path.suffix!r}; use .txt or .jsonl.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        line = path.read_bytes()[:error.start].count(b"\n") + 1
        raise ValueError(f"prompts={str(path)!r}: line {line} is not UTF-8 text (byte {error.start}); save the file "
                         "as UTF-8.") from None
    # Numbered as an editor shows them: blank lines are skipped but still counted.
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if path.suffix != ".jsonl":
        return [Prompt(line) for _, line in lines]
    prompts = []
    for n, line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"prompts={str(path)!r}: line {n} is not JSON ({error.msg} at column {error.colno}); "
                             'each line must be one record such as {"prompt": "..."}.') from None
        prompts.append(_to_prompt(record, where=f"{path}:{n}"))
    return prompts


def _to_prompt(item: str | Mapping | Prompt, where: str) -> Prompt:
    if isinstance(item, Prompt):
        prompt = item
    elif isinstance(item, str):
        prompt = Prompt(item)
    elif isinstance(item, Mapping) and isinstance(item.get("prompt"), str):
        references = item.get("references", ())
        prompt = Prompt(item["prompt"], (references,) if isinstance(references, str) else tuple(references))
    else:
        raise ValueError(f"{where}: expected a string or a record with a 'prompt' string, got {item!r}.")
    if not prompt.text.strip():
        raise ValueError(f"{where}: the prompt is empty; give every prompt some text (the LM needs at least one token "
                         "to continue).")
    return prompt


def dataset_prompts(dataset: str | os.PathLike, column: str = "prompt", split: str = "train",
                    references_column: str | None = None) -> list[Prompt]:
    """Prompts from a Hugging Face dataset: a hub name, a directory of data files, or a ``save_to_disk`` dir.

    ``split`` takes the ``datasets`` slicing syntax too (``"train[:1000]"``); ``references_column`` holds a
    string or a list of strings per row (for the ``rouge``/``bleu`` rewards).
    """
    try:
        import datasets
    except ImportError as error:
        raise ImportError("prompts from a Hugging Face dataset need the datasets package: "
                          "pip install 'lm-gym[datasets]'") from error
    path = Path(dataset)
    if (path / "dataset_dict.json").exists() or (path / "state.json").exists():  # written by save_to_disk
        rows = _saved_split(datasets, datasets.load_from_disk(str(path)), split)
    else:
        rows = datasets.load_dataset(str(dataset), split=split)
    for name, argument in ((column, "column"), (references_column, "references_column")):
        if name is not None and name not in rows.column_names:
            raise ValueError(f"{argument}={name!r} is not a column of dataset {str(dataset)!r} (split {split!r}); "
                             f"its columns are {rows.column_names}.")
    records = ({"prompt": row[column], "references": row[references_column] if references_column else ()}
               for row in rows)
    return [_to_prompt(record, where=f"{dataset}[{i}]") for i, record in enumerate(records)]


def _saved_split(datasets, loaded, split: str):
    """``split`` (with ``load_dataset``'s slicing, e.g. ``"test[:64]"``) of a ``save_to_disk`` dataset."""
    if not isinstance(loaded, datasets.DatasetDict):
        loaded = datasets.DatasetDict({"train": loaded})
    try:
        parts = datasets.ReadInstruction.from_spec(split).to_absolute({k: len(v) for k, v in loaded.items()})
    except (ValueError, AssertionError) as error:
        raise ValueError(f"split={split!r} of a saved dataset: {error}") from error
    return datasets.concatenate_datasets([loaded[p.splitname].select(range(p.from_, p.to)) for p in parts])


def split_prompts(prompts: list[Prompt], held_out: float, seed: int = 0) -> tuple[list[Prompt], list[Prompt]]:
    """A reproducible (train, held-out) split; ``held_out`` is the held-out fraction, in (0, 1)."""
    if not 0 < held_out < 1:
        raise ValueError(f"held_out={held_out}: a fraction strictly between 0 and 1.")
    order = random.Random(seed).sample(range(len(prompts)), len(prompts))
    cut = max(1, round(len(prompts) * held_out))
    if cut >= len(prompts):
        raise ValueError(f"held_out={held_out} of {len(prompts)} prompts leaves none to train on.")
    return [prompts[i] for i in sorted(order[cut:])], [prompts[i] for i in sorted(order[:cut])]
