"""Rewards: the batched :class:`Reward` protocol, the built-ins, and the name -> reward registry.

A reward scores finished completions in batches::

    reward(prompts: list[str], completions: list[str], references: list[tuple[str, ...]]) -> list[float]

Any plain callable ``f(prompt, completion) -> float`` is accepted too and wrapped in
:class:`FunctionReward`. Subclass :class:`Reward` when scoring many completions at once is cheaper
(a neural classifier, for one).
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch


class Reward(ABC):
    """Scores a batch of completions; returns one finite float per completion."""

    name: str = "reward"

    @abstractmethod
    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str], references: Sequence[Sequence[str]]
    ) -> Sequence[float]: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class FunctionReward(Reward):
    """Wraps a per-sample callable ``f(prompt, completion) -> float``."""

    def __init__(self, fn: Callable[[str, str], float]):
        self.fn = fn
        self.name = getattr(fn, "__name__", type(fn).__name__)

    def __call__(self, prompts, completions, references):
        return [self.fn(p, c) for p, c in zip(prompts, completions)]


class SentimentReward(Reward):
    """VADER's compound sentiment of the completion, in [-1, 1]; offline (the lexicon ships with it)."""

    name = "sentiment"

    def __init__(self, include_prompt: bool = False):
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.analyzer = SentimentIntensityAnalyzer()
        self.include_prompt = include_prompt

    def __call__(self, prompts, completions, references):
        texts = [p + c for p, c in zip(prompts, completions)] if self.include_prompt else completions
        return [self.analyzer.polarity_scores(text)["compound"] for text in texts]


class ClassifierReward(Reward):
    """A Hugging Face text-classification model's probability (or logit) of one label.

    Args:
        model: hub name or local path of an ``AutoModelForSequenceClassification``.
        label: a label name from the model's ``id2label`` or an index; default ``"POSITIVE"`` when the
            model has it, else index 1 of a two-label model.
        output: ``"probability"`` (softmax) or ``"logit"``.
        include_prompt: score ``prompt + completion`` instead of the completion alone.
    """

    name = "classifier"

    def __init__(
        self,
        model: str,
        label: str | int | None = None,
        output: str = "probability",
        include_prompt: bool = False,
        batch_size: int = 32,
        device: str | None = None,
    ):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if output not in ("probability", "logit"):
            raise ValueError(f"output={output!r}: choose 'probability' or 'logit'.")
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.model = AutoModelForSequenceClassification.from_pretrained(model).eval()
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device)
        self.label_index = self._label_index(label, self.model.config.id2label, model)
        self.output, self.include_prompt, self.batch_size = output, include_prompt, batch_size

    @staticmethod
    def _label_index(label: str | int | None, id2label: dict[int, str], model: str) -> int:
        names = {name.lower(): index for index, name in id2label.items()}
        if label is None:
            if "positive" in names:
                return names["positive"]
            if len(id2label) == 2:
                return 1
        elif isinstance(label, int) and label in id2label:
            return label
        elif isinstance(label, str) and label.lower() in names:
            return names[label.lower()]
        raise ValueError(f"label={label!r} is not a label of model={model!r}; its labels are {id2label}.")

    @torch.no_grad()
    def __call__(self, prompts, completions, references):
        texts = [p + c for p, c in zip(prompts, completions)] if self.include_prompt else list(completions)
        scores: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(texts[start : start + self.batch_size], padding=True, truncation=True,
                                   return_tensors="pt").to(self.device)
            logits = self.model(**batch).logits.float()
            if self.output == "probability":
                logits = logits.softmax(-1)
            scores.extend(logits[:, self.label_index].tolist())
        return scores


class KeywordReward(Reward):
    """Fraction of ``keywords`` that occur in the completion (whole words, case-insensitive by default)."""

    name = "keyword"

    def __init__(self, keywords: Sequence[str], case_sensitive: bool = False):
        if isinstance(keywords, str) or not keywords:
            raise ValueError("keywords must be a non-empty list of strings, e.g. keywords=['great', 'fun'].")
        flags = 0 if case_sensitive else re.IGNORECASE
        self.patterns = [re.compile(rf"\b{re.escape(word)}\b", flags) for word in keywords]

    def __call__(self, prompts, completions, references):
        return [sum(bool(p.search(c)) for p in self.patterns) / len(self.patterns) for c in completions]


class RegexReward(Reward):
    """1.0 when the regular expression ``pattern`` matches somewhere in the completion, else 0.0."""

    name = "regex"

    def __init__(self, pattern: str, flags: int = 0):
        self.pattern = re.compile(pattern, flags)

    def __call__(self, prompts, completions, references):
        return [float(self.pattern.search(c) is not None) for c in completions]


class LengthReward(Reward):
    """``-|length - target| / target``: 0 at the target length, counted in words or characters."""

    name = "length"

    def __init__(self, target: int, unit: str = "words"):
        if target <= 0:
            raise ValueError(f"target={target}: must be a positive length.")
        if unit not in ("words", "chars"):
            raise ValueError(f"unit={unit!r}: choose 'words' or 'chars'.")
        self.target, self.unit = target, unit

    def __call__(self, prompts, completions, references):
        lengths = [len(c.split()) if self.unit == "words" else len(c) for c in completions]
        return [-abs(n - self.target) / self.target for n in lengths]


class _ReferenceReward(Reward):
    """Base for rewards that compare the completion with the prompt's references."""

    def __call__(self, prompts, completions, references):
        for prompt, refs in zip(prompts, references):
            if not refs:
                raise ValueError(
                    f"reward {self.name!r} needs references, but prompt {prompt!r} has none: load prompts "
                    "from records with a 'references' field, e.g. a .jsonl file."
                )
        return [self.score(c, list(refs)) for c, refs in zip(completions, references)]

    @abstractmethod
    def score(self, completion: str, references: list[str]) -> float: ...


class RougeReward(_ReferenceReward):
    """Best ROUGE F-measure of the completion against the references (rouge-score)."""

    name = "rouge"

    def __init__(self, rouge_type: str = "rougeL"):
        from rouge_score import rouge_scorer

        self.rouge_type = rouge_type
        self.scorer = rouge_scorer.RougeScorer([rouge_type], use_stemmer=True)

    def score(self, completion, references):
        return max(self.scorer.score(ref, completion)[self.rouge_type].fmeasure for ref in references)


class BleuReward(_ReferenceReward):
    """Sentence BLEU of the completion against the references (sacrebleu), scaled to [0, 1]."""

    name = "bleu"

    def score(self, completion, references):
        import sacrebleu

        return sacrebleu.sentence_bleu(completion, references).score / 100.0


class TargetWordReward(Reward):
    """Toy task with a known optimum: the fraction of completion words equal to ``target``.

    The optimum, 1.0, is to write ``target`` and nothing else; an empty completion scores 0.
    """

    name = "target_word"

    def __init__(self, target: str = "great"):
        self.target = target.lower()

    def __call__(self, prompts, completions, references):
        words = [re.findall(r"\w+", c.lower()) for c in completions]
        return [sum(w == self.target for w in ws) / len(ws) if ws else 0.0 for ws in words]


class ExactMatchReward(_ReferenceReward):
    """Verifiable answers: 1.0 when the completion equals one of the prompt's references, else 0.0.

    Compared after stripping surrounding whitespace (``strip=True``), nothing else: ``"68"`` and ``" 68"``
    match ``"68"``, ``"068"`` and ``"68."`` do not. The optimum is 1.0.
    """

    name = "exact_match"

    def __init__(self, strip: bool = True):
        self.strip = strip

    def score(self, completion, references):
        clean = str.strip if self.strip else str
        return float(clean(completion) in {clean(r) for r in references})


REWARDS: dict[str, Callable[..., Reward]] = {
    "sentiment": SentimentReward,
    "classifier": ClassifierReward,
    "keyword": KeywordReward,
    "regex": RegexReward,
    "length": LengthReward,
    "rouge": RougeReward,
    "bleu": BleuReward,
    "target_word": TargetWordReward,
    "exact_match": ExactMatchReward,
}


def register_reward(name: str, factory: Callable[..., Reward], overwrite: bool = False) -> None:
    """Make ``reward=name`` (env, CLI) build ``factory(**reward_kwargs)``."""
    if name in REWARDS and not overwrite:
        raise ValueError(f"a reward named {name!r} is already registered; pass overwrite=True to replace it.")
    REWARDS[name] = factory


def make_reward(reward: str | Reward | Callable[[str, str], float], **kwargs: Any) -> Reward:
    """Build a :class:`Reward` from a registered name (plus its keyword arguments), an instance or a callable."""
    if isinstance(reward, str):
        if reward not in REWARDS:
            raise ValueError(
                f"reward={reward!r} is not a known reward. Choose one of {sorted(REWARDS)}, pass a callable "
                "f(prompt, completion) -> float, or register one with lm_gym.register_reward()."
            )
        try:
            return REWARDS[reward](**kwargs)
        except TypeError as error:
            raise TypeError(f"reward={reward!r} with reward_kwargs={kwargs}: {error}") from error
    if kwargs:
        raise ValueError("reward_kwargs only apply when reward is given by name.")
    if isinstance(reward, Reward):
        return reward
    if callable(reward):
        return FunctionReward(reward)
    raise TypeError(f"reward={reward!r}: expected a name, a Reward or a callable f(prompt, completion) -> float.")


def score(
    reward: Reward, prompts: Sequence[str], completions: Sequence[str], references: Sequence[Sequence[str]]
) -> np.ndarray:
    """Call ``reward`` and check its answer: one finite float per completion, or a clear error."""
    try:
        values = reward(prompts, completions, references)
        values = np.asarray([float(v) for v in values], dtype=np.float64)
    except Exception as error:
        raise RuntimeError(
            f"reward {reward.name!r} raised {type(error).__name__}: {error} "
            f"(first prompt {prompts[0]!r}, completion {completions[0]!r})"
        ) from error
    if values.shape != (len(completions),):
        raise ValueError(f"reward {reward.name!r} returned {values.size} scores for {len(completions)} completions.")
    bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
    if bad:
        i = bad[0]
        raise ValueError(
            f"reward {reward.name!r} returned {values[i]} for prompt {prompts[i]!r}, completion "
            f"{completions[i]!r}; rewards must be finite floats (guard empty completions and divisions)."
        )
    return values
