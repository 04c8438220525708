"""Token ids of a vocabulary: the one lookup that env arguments (stop, allowed, banned and turn-end tokens) use, and
the one check of an action (a token id) that every env and vector env applies."""

from __future__ import annotations

import operator
from typing import Any

from transformers import PreTrainedTokenizerBase


def token_id(tokenizer: PreTrainedTokenizerBase, token: str | int, argument: str) -> int:
    """The id of ``token``: a token string as the tokenizer spells it (``'Ġgreat'``, ``'<|im_end|>'``) or an id (a
    Python or numpy integer). Anything else is a ValueError that names ``argument``."""
    size = len(tokenizer)
    if not isinstance(token, str):
        try:
            index = operator.index(token)  # ints and numpy integers; refuses floats and bools' look-alikes
        except TypeError:
            index = None
        if index is None or isinstance(token, bool) or not 0 <= index < size:
            raise ValueError(f"{argument}: {token!r} is not a token id of the vocabulary (0..{size - 1}); give ids in "
                             "that range or token strings.")
        return index
    index = tokenizer.convert_tokens_to_ids(token)
    if index is None or (index == tokenizer.unk_token_id and token != tokenizer.unk_token):
        raise ValueError(f"{argument}: {token!r} is not a token of the vocabulary (token strings as the tokenizer "
                         "spells them, e.g. 'Ġgreat' or '<|im_end|>', or ids).")
    return index


def check_action(action: Any, vocab_size: int) -> int:
    """``action`` as a token id of a ``Discrete(vocab_size)`` space, or a ValueError that names the range."""
    try:
        token = operator.index(action)  # ints and numpy integers; refuses floats and arrays
    except TypeError:
        token = -1
    if not 0 <= token < vocab_size:
        raise ValueError(f"action={action!r} is not a token id of the vocabulary: expected an integer in "
                         f"[0, {vocab_size - 1}] (action_space=Discrete({vocab_size})).")
    return token
