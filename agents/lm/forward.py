"""How left-padded observations become LM calls: positions, the cache keyword, prefix sharing, one call site.

Everything here is backend-agnostic: it takes a Hugging Face causal LM and ``{"input_ids", "attention_mask"}``
tensors of TextGen-v0's layout (left-padded windows, the newest token in the last column).
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedModel

Observation = dict[str, torch.Tensor]


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Positions that count real tokens only, as ``generate()`` computes them for left padding."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def is_packed(obs: Observation) -> bool:
    """Whether ``obs`` holds packed episodes (:mod:`agents.lm.packing`) rather than TextGen-v0's windows."""
    return "cu_seqlens" in obs


def growth(prev_ids: torch.Tensor, prev_mask: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(B,)`` long: how many tokens row b of ``ids`` added to row b of ``prev_ids``; 0 where it is no extension.

    All ``(B, W)``, left-padded. Row b extends its previous row when that row's real tokens are the first real
    tokens of the new row and at least one token came after them: one token in a single-turn step, the end token
    plus the env's reply at a multi-turn turn end. Then ``prev``'s keys/values are the new row's for those
    tokens (same tokens, same positions, causal attention), and only the added tokens need a forward.
    """
    if (torch.equal(ids[:, :-1], prev_ids[:, 1:]) and torch.equal(mask[:, :-1], prev_mask[:, 1:])
            and bool(mask[:, -1].all()) and not bool(prev_mask[:, 0].any())):
        # The common step, every row one token longer: each row shifted left by one column, only padding fell off.
        # Three comparisons of contiguous memory instead of the gathers below (at 16k columns they were ~15% of a
        # rollout step).
        return torch.ones(len(ids), dtype=torch.long, device=ids.device)
    prev_length, length = prev_mask.sum(-1), mask.sum(-1)
    added = length - prev_length
    columns = torch.arange(ids.shape[1], device=ids.device)
    # Where each previous real token sits in the new row: ``added`` columns further left.
    source = (columns[None, :] - added[:, None]).clamp(0, ids.shape[1] - 1)
    real = prev_mask == 1
    same = ((ids.gather(1, source) == prev_ids) & (mask.gather(1, source) == 1)) | ~real
    extends = (added >= 1) & same.all(-1) & (columns[None, :] - added[:, None] >= 0).logical_or(~real).all(-1)
    return torch.where(extends, added, torch.zeros_like(added))


def base_model_class(lm: torch.nn.Module) -> type:
    """The transformers class behind ``lm``: wrappers (peft's ``PeftModel``, :class:`agents.AdaptersDisabled`)
    pass keyword arguments through to the model they wrap, so its signature decides what they take."""
    return type(lm.get_base_model() if hasattr(lm, "get_base_model") else lm)


@functools.cache
def _forward_parameters(lm_class: type) -> frozenset[str]:
    return frozenset(inspect.signature(lm_class.forward).parameters)


def accepts_logits_to_keep(lm: torch.nn.Module) -> bool:
    """Most causal LMs can skip the vocabulary projection for positions nobody reads."""
    return "logits_to_keep" in _forward_parameters(base_model_class(lm))


def cache_keyword(lm: torch.nn.Module) -> str:
    """The name under which this LM takes (and returns) its KV cache.

    transformers 5 renamed ``past_key_values`` to ``cache`` (5.24 warns on the old name, 5.40 removes it);
    older releases and remote-code models only know ``past_key_values``.
    """
    return "cache" if "cache" in _forward_parameters(base_model_class(lm)) else "past_key_values"


@dataclass
class LMOutput:
    logits: torch.Tensor  # (B, kept positions, vocab)
    hidden: torch.Tensor | None  # (B, kept positions, hidden_size): what the LM head read
    cache: Any = None  # the model's KV cache object, when use_cache


_HIDDEN_FROM_OUTPUT: set[type] = set()  # LM classes whose head is not a called module (see run_lm)


def run_lm(lm: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor | None, positions: torch.Tensor, *,
           keep: int | torch.Tensor | None = None, past: Any = None, use_cache: bool = False, hidden: bool = True) -> LMOutput:
    """One call of a causal LM with the arguments that suit the installed transformers.

    ``keep``: compute logits for the last ``keep`` positions only, or for the columns a 1-D tensor lists (where the
    model supports it). ``mask=None``: no attention mask (packed rows, see :mod:`agents.lm.packing`).
    ``hidden``: also return the last hidden state, read as the input of the LM head by a forward pre-hook:
    ``output_hidden_states=True`` would collect every layer's states (measured at ~12% of a decode step on
    transformers 5), where the critic needs only the last.
    """
    kwargs: dict[str, Any] = {"use_cache": use_cache}
    if keep is not None and accepts_logits_to_keep(lm):
        kwargs["logits_to_keep"] = keep
    if past is not None:
        kwargs[cache_keyword(lm)] = past
    model_class = base_model_class(lm)
    captured: list[torch.Tensor] = []
    handle = None
    if hidden and model_class not in _HIDDEN_FROM_OUTPUT:
        handle = lm.get_output_embeddings().register_forward_pre_hook(
            lambda module, args, kw: captured.append(args[0] if args else next(iter(kw.values()))), with_kwargs=True)
    elif hidden:
        kwargs["output_hidden_states"] = True
    try:
        out = lm(input_ids=ids, attention_mask=mask, position_ids=positions, **kwargs)
    finally:
        if handle is not None:
            handle.remove()
    last_hidden = captured[-1] if captured else None
    if hidden and last_hidden is None:  # a model that applies its head's weight without calling the module
        _HIDDEN_FROM_OUTPUT.add(model_class)
        return run_lm(lm, ids, mask, positions, keep=keep, past=past, use_cache=use_cache, hidden=True)
    if hidden and "output_hidden_states" in kwargs:
        last_hidden = out.hidden_states[-1][:, -out.logits.shape[1]:]
    return LMOutput(out.logits, last_hidden, getattr(out, cache_keyword(lm)) if use_cache else None)


def trim_padding(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the leading columns that are padding in every row: they change no result (masked keys, positions
    counted from the mask), only the cost of the forward."""
    first = ids.shape[1] - int(mask.sum(-1).max())
    return (ids[:, first:], mask[:, first:]) if first > 0 else (ids, mask)


@dataclass
class SharedForwards:
    """Which rows one forward serves: ``roots`` are the rows to run, row ``r`` reads root ``chain[r]``'s
    output ``offset[r]`` columns before its end."""

    roots: torch.Tensor  # (F,) row indices
    chain: torch.Tensor  # (N,) index into roots
    offset: torch.Tensor  # (N,)


def shared_forwards(ids: torch.Tensor, mask: torch.Tensor) -> SharedForwards:
    """Group rows whose token sequences are prefixes of one another, so one forward of the longest serves all.

    A row's next-token logits equal those of any longer row that starts with the same tokens, read at the
    column where the shorter row ends (same tokens, same positions, causal attention). The steps of one
    episode are such rows, in any order: the stock SB3 buffer's shuffled minibatches share forwards too.

    How: rows are re-aligned to start at column 0 (padding -1 after them) and sorted lexicographically
    (``torch.unique``, which also merges identical rows). A prefix sorts right before its extensions, so a
    row is served by the first row at or after it that is not a prefix of its successor.
    """
    n, window = ids.shape
    lengths = mask.sum(-1)
    if n == 1 or not bool((mask[:, 1:] >= mask[:, :-1]).all()):  # not left-padded: one forward per row
        rows = torch.arange(n, device=ids.device)
        return SharedForwards(rows, rows, torch.zeros_like(rows))
    columns = torch.arange(window, device=ids.device)
    source = (columns + (window - lengths)[:, None]).clamp(max=window - 1)
    aligned = torch.where(columns < lengths[:, None], ids.gather(1, source), -1)
    unique, inverse = torch.unique(aligned, dim=0, sorted=True, return_inverse=True)
    unique_lengths = (unique >= 0).sum(-1)
    prefix_of_next = ((unique[:-1] == unique[1:]) | (unique[:-1] < 0)).all(-1)
    is_root = torch.ones(len(unique), dtype=torch.bool, device=ids.device)
    is_root[:-1] = ~prefix_of_next
    root_unique = is_root.nonzero().squeeze(1)  # ascending
    chain = torch.searchsorted(root_unique, inverse)  # the first root at or after each row
    any_row = torch.empty(len(unique), dtype=torch.long, device=ids.device)
    any_row[inverse] = torch.arange(n, device=ids.device)
    return SharedForwards(any_row[root_unique], chain, unique_lengths[root_unique][chain] - lengths)


def forward_plan(ids: torch.Tensor, mask: torch.Tensor, share: bool = True) -> SharedForwards:
    """:func:`shared_forwards` when ``share``, else one forward per row."""
    if share:
        return shared_forwards(ids, mask)
    rows = torch.arange(len(ids), device=ids.device)
    return SharedForwards(rows, rows, torch.zeros_like(rows))


def next_token_logits(lm: torch.nn.Module, obs: Observation, n_actions: int, plan: SharedForwards | None = None,
                      hidden: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Next-token logits and last hidden states of a batch of observations.

    Packed observations (:mod:`agents.lm.packing`, what the episode buffers hand the update) run as packed rows.
    Rows that are prefixes of one another (the steps of one episode, in whatever order) are computed by one
    forward of the longest (:func:`shared_forwards`; pass ``plan=forward_plan(ids, mask, share=False)`` for
    one forward per row): an episode of L steps costs one sequence, not L. Results are equal either way.

    Args:
        lm: a causal LM.
        obs: ``{"input_ids": (N, W), "attention_mask": (N, W)}``, left-padded, newest token at ``W - 1``.
        n_actions: the env's vocabulary size; logits beyond it (padded embedding rows) are dropped.

    Returns:
        logits ``(N, n_actions)`` in float32 and hidden states ``(N, hidden_size)`` (None unless ``hidden``).
    """
    if is_packed(obs):
        from agents.lm.packing import packed_next_token_logits  # packing builds on this module's run_lm
        return packed_next_token_logits(lm, obs, n_actions, hidden)
    ids, mask = obs["input_ids"].long(), obs["attention_mask"].long()
    plan = shared_forwards(ids, mask) if plan is None else plan
    roots_ids, roots_mask = trim_padding(ids[plan.roots], mask[plan.roots])
    out = run_lm(lm, roots_ids, roots_mask, position_ids(roots_mask), keep=int(plan.offset.max()) + 1, hidden=hidden)
    logits = out.logits[plan.chain, -1 - plan.offset, :n_actions].float()
    return logits, None if out.hidden is None else out.hidden[plan.chain, -1 - plan.offset]


def check_token_observation(obs: Observation, lm: PreTrainedModel) -> None:
    """Refuse observations that are not token ids: floats, negatives, ids past ``lm``'s embedding. A normalizing
    wrapper (SB3's ``VecNormalize`` with its default ``norm_obs=True``) is the usual cause; the embedding would
    fail with a bare ``IndexError``, or silently read rounded garbage."""
    ids = obs["input_ids"]
    vocabulary = lm.get_input_embeddings().num_embeddings
    if ids.numel() == 0:
        return
    low, high = torch.aminmax(ids)  # one reduction, one device sync: this runs on every rollout step
    integral = not ids.is_floating_point() or bool(torch.equal(ids, ids.round()))
    if integral and 0 <= int(low) and int(high) < vocabulary:
        return
    raise ValueError(f"observation input_ids must be token ids in [0, {vocabulary}); got {ids.dtype} values such as "
                     f"{ids.flatten()[:4].tolist()}. A wrapper changed them: with SB3's VecNormalize use "
                     "VecNormalize(env, norm_obs=False) (norm_reward=True still works).")
