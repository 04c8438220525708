"""How the turns of a conversation become token ids: once each, alone, never re-encoding the history.

:class:`TurnCodec` encodes the text env's first message and each reply, and knows which tokens end an agent
turn. With a chat template (a tokenizer that has one) the first message is a user turn plus the generation
prompt, and a reply is what the template adds after an assistant turn: the user-turn wrapping of the reply and
the next generation prompt, sliced from two renderings of a fixed base conversation (the way SkyRL-Gym does it),
so no part of the history is ever rendered again. Without a chat template the pieces are plain text around
documented separators (``first_template``, ``reply_template``).
"""

from __future__ import annotations

from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase

from lm_gym.models import start_token_ids
from lm_gym.vocabulary import token_id

# A fixed base conversation whose renderings bound the slice that a reply adds (any short texts do).
BASE_CONVERSATION = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]


class TurnCodec:
    """Token ids of the conversation's pieces, for one tokenizer.

    Args:
        tokenizer: the agent's tokenizer.
        use_chat_template: ``None``: use the tokenizer's chat template when it has one.
        turn_end_tokens: token strings or ids that end an agent turn; ``None``: the chat template's end-of-turn
            token (``<|im_end|>``, ``<|eot_id|>``, ...) and EOS; ``[]``: none, every turn runs ``max_turn_tokens``
            tokens and the env appends the default end token.
        first_template / reply_template: plain-text mode only: how the first message and each reply are written,
            ``{observation}`` / ``{reply}`` standing for the text env's text. The defaults put each on its own line,
            so the agent's turn starts on a new line: ``"{observation}\\n"``, ``"\\n{reply}\\n"``.

    Attributes:
        turn_end_ids: ids that end an agent turn.
        end_id: the id the env appends when an agent turn reaches ``max_turn_tokens`` without one.
        after_end_ids: what the chat template writes after the end-of-turn token (Qwen's newline), put in front of
            every reply (plain text: nothing).
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, use_chat_template: bool | None = None,
                 turn_end_tokens: Sequence[str | int] | None = None, first_template: str = "{observation}\n",
                 reply_template: str = "\n{reply}\n"):
        has_template = getattr(tokenizer, "chat_template", None) is not None
        if use_chat_template and not has_template:
            raise ValueError("use_chat_template=True: the tokenizer has no chat template; set "
                             "tokenizer.chat_template or use plain text (use_chat_template=None or False).")
        for name, template, field in (("first_template", first_template, "{observation}"),
                                      ("reply_template", reply_template, "{reply}")):
            if field not in template:
                raise ValueError(f"{name}={template!r} must contain {field}, where the text env's text goes.")
        self.tokenizer = tokenizer
        self.chat = has_template if use_chat_template is None else use_chat_template
        self.first_template, self.reply_template = first_template, reply_template
        self.start_ids = start_token_ids(tokenizer)
        template_end, self.after_end_ids = self._template_turn_end() if self.chat else (None, [])
        eos = tokenizer.eos_token_id
        defaults = [i for i in (template_end, eos) if i is not None]
        ends = defaults if turn_end_tokens is None else [token_id(tokenizer, token, "turn_end_tokens")
                                                         for token in turn_end_tokens]
        if not ends and not defaults:
            raise ValueError("the tokenizer has no EOS token and no chat template: pass turn_end_tokens=[...], the "
                             "tokens that end an agent turn.")
        self.end_id = (ends or defaults)[0]
        self.turn_end_ids = frozenset(ends)

    def encode(self, text: str) -> list[int]:
        """``text`` as ids, without special tokens added (it is a piece in the middle of a sequence)."""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def first(self, observation: str) -> list[int]:
        """The conversation's opening: the text env's first message as the first user turn."""
        if self.chat:
            rendered = self._render([{"role": "user", "content": observation}], add_generation_prompt=True)
            ids = self.encode(rendered)
            # A template that writes no BOS itself (Qwen's) gets the tokenizer's, as plain prompts do.
            return ids if ids[:len(self.start_ids)] == self.start_ids else self.start_ids + ids
        return self.start_ids + self.encode(self.first_template.format(observation=observation))

    def replies(self, replies: Sequence[str]) -> list[list[int]]:
        """What follows an agent turn's end token, for each reply: the template's tail after the end token, the
        reply as a user turn and the next generation prompt (plain text: ``reply_template``). One tokenizer call."""
        if not replies:
            return []
        if self.chat:
            base = self._render(BASE_CONVERSATION)
            pieces = []
            for reply in replies:
                full = self._render([*BASE_CONVERSATION, {"role": "user", "content": reply}], add_generation_prompt=True)
                if not full.startswith(base):
                    raise ValueError("the chat template renders a conversation differently once a turn is added, so "
                                     "a reply cannot be encoded on its own; use plain text (use_chat_template=False).")
                pieces.append(full[len(base):])
        else:
            pieces = [self.reply_template.format(reply=reply) for reply in replies]
        encoded = self.tokenizer(pieces, add_special_tokens=False)["input_ids"]
        return [self.after_end_ids + ids for ids in encoded]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def _render(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)

    def _template_turn_end(self) -> tuple[int | None, list[int]]:
        """The end-of-turn id the template writes after an assistant message, and the ids it writes after that."""
        rendered = self._render(BASE_CONVERSATION)
        tail = self.encode(rendered[rendered.rindex("b") + 1:])  # what follows the assistant's text
        special = set(self.tokenizer.all_special_ids) | set(getattr(self.tokenizer, "added_tokens_decoder", {}))
        for index, token in enumerate(tail):
            if token in special:
                return token, tail[index + 1:]
        return None, tail

