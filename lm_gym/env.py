"""TextGenEnv: text generation as a token-level Gymnasium environment."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from transformers import PreTrainedTokenizerBase

from lm_gym.models import ModelRef, ensure_pad_token, load_tokenizer
from lm_gym.prompts import Prompt, PromptSource, load_prompts
from lm_gym.rewards import Reward, make_reward, score

Observation = dict[str, np.ndarray]


class TextGenEnv(gym.Env[Observation, np.int64]):
    """
    ## Description

    A language model writes a completion for a prompt one token at a time, and a reward scores the text.
    Each step the agent picks the next token; the episode ends at EOS or after ``max_new_tokens``.
    With no arguments this is an offline analog of the classic IMDB task: the bundled tiny LM continues
    movie-review openings, and the reward is the VADER sentiment of what it writes.

    ## Action Space

    ``Discrete(len(tokenizer))``: the id of the next token, over the tokenizer's full vocabulary
    (added tokens included).

    ## Observation Space

    ``Dict`` of two ``Box(shape=(window,), dtype=int64)``, ``window = max_prompt_tokens + max_new_tokens``:

    | key              | values                | meaning                                             |
    |------------------|-----------------------|-----------------------------------------------------|
    | `input_ids`      | 0 .. vocab_size - 1   | prompt + tokens generated so far, **left-padded**   |
    | `attention_mask` | 0 or 1                | 1 where `input_ids` holds a real token              |

    Left padding keeps the newest token in the last column, so a policy reads the next-token logits
    at index ``-1`` for every row. Integer boxes, not ``MultiDiscrete``: SB3 would one-hot encode those.

    ## Rewards

    ``reward`` is a built-in name (see ``lm_gym.REWARDS``), a :class:`lm_gym.Reward` that scores batches,
    or any callable ``f(prompt, completion) -> float``.
    ``reward_mode="sparse"`` (default) pays the completion's score on the last step and 0 before it.
    ``reward_mode="dense"`` pays, each step, how much that token changed the score of the completion so far
    (potential-based shaping: the return is ``score(final) - score("")``, the optimum is unchanged).
    With ``defer_reward=True`` (set by :class:`lm_gym.BatchedRewardVecEnv`) a sparse env leaves the final
    score to the vector wrapper, which scores all episodes that end in the same step in one call.

    ## Action Masks

    ``action_masks()`` returns a ``(vocab_size,)`` bool array for sb3-contrib's MaskablePPO: all True unless
    ``allowed_tokens`` (only these) or ``banned_tokens`` (all but these) are given. Stop tokens are always
    allowed, so an episode can always end. Masks that depend on a model (NLPO's top-p nucleus) belong to
    the policy: ``LMActorCriticPolicy(top_p_mask=0.9)``.

    ## Starting State

    ``reset(seed=...)`` draws a prompt uniformly from ``prompts`` with the env's seeded RNG;
    ``reset(options={"prompt": "..."})`` starts from the given text instead.

    ## Episode End

    The episode terminates when the agent emits a stop token (the tokenizer's EOS by default) or when
    ``max_new_tokens`` tokens have been generated. Both are true terminal states (the observation shows
    how many tokens remain), so ``terminated=True`` and ``truncated=False``.

    ## Arguments

    ```python
    gym.make("TextGen-v0", model=None, prompts=None, reward="sentiment", reward_kwargs=None,
             max_new_tokens=16, max_prompt_tokens=None, truncate_prompts=False, reward_mode="sparse", stop_tokens=None,
             tokenizer=None, allowed_tokens=None, banned_tokens=None, render_mode=None)
    ```

    * ``model``: Hugging Face name or local path whose tokenizer defines the vocabulary (``None``: bundled).
    * ``prompts``: list of strings/records, or a ``.txt``/``.jsonl`` path (``None``: bundled prompts).
    * ``max_prompt_tokens``: prompt window; ``None`` fits the longest prompt. Longer prompts are refused,
      unless ``truncate_prompts=True``: then they keep their first ``max_prompt_tokens`` tokens (IMDB-style
      prompts cut from long texts), and ``info["prompt"]`` and the reward see the truncated text.
    * ``stop_tokens``: token strings that end the episode; ``None`` means EOS, ``[]`` never stops early.
    * ``tokenizer``: a ready tokenizer object, instead of loading one from ``model``.
    * ``allowed_tokens`` / ``banned_tokens``: token strings or ids for the static ``action_masks()``.

    ## Version History

    * v0: Initial version.
    """

    metadata = {"render_modes": ["ansi", "human"], "render_fps": 4}

    def __init__(
        self,
        model: ModelRef = None,
        prompts: PromptSource = None,
        reward: str | Reward | Callable[[str, str], float] = "sentiment",
        reward_kwargs: dict[str, Any] | None = None,
        max_new_tokens: int = 16,
        max_prompt_tokens: int | None = None,
        truncate_prompts: bool = False,
        reward_mode: str = "sparse",
        stop_tokens: Sequence[str] | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        allowed_tokens: Sequence[str | int] | None = None,
        banned_tokens: Sequence[str | int] | None = None,
        render_mode: str | None = None,
    ):
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens}: must be at least 1.")
        if reward_mode not in ("sparse", "dense"):
            raise ValueError(f"reward_mode={reward_mode!r}: choose 'sparse' or 'dense'.")
        if tokenizer is None:
            tokenizer = load_tokenizer(model)
        else:
            ensure_pad_token(tokenizer)
        self.tokenizer = tokenizer
        self.reward = make_reward(reward, **(reward_kwargs or {}))
        self.reward_mode = reward_mode
        self.render_mode = render_mode
        self.max_new_tokens = max_new_tokens
        self.defer_reward = False

        if truncate_prompts and max_prompt_tokens is None:
            raise ValueError("truncate_prompts=True needs max_prompt_tokens=N: how many leading tokens to keep.")
        self.truncate_prompts = truncate_prompts
        self.prompts: list[Prompt] = load_prompts(prompts)
        self.prompt_ids = self.tokenizer([p.text for p in self.prompts], add_special_tokens=False)["input_ids"]
        if truncate_prompts:
            self.prompts, self.prompt_ids = map(list, zip(*(
                self._truncate(p, ids, max_prompt_tokens) for p, ids in zip(self.prompts, self.prompt_ids))))
        longest = max(len(ids) for ids in self.prompt_ids)
        self.max_prompt_tokens = longest if max_prompt_tokens is None else max_prompt_tokens
        if longest > self.max_prompt_tokens:
            index = next(i for i, ids in enumerate(self.prompt_ids) if len(ids) == longest)
            raise ValueError(
                f"prompt {self.prompts[index].text[:80]!r} has {longest} tokens, more than "
                f"max_prompt_tokens={self.max_prompt_tokens}; raise max_prompt_tokens, shorten the prompt, or pass "
                "truncate_prompts=True to keep the first max_prompt_tokens tokens."
            )
        self.window = self.max_prompt_tokens + max_new_tokens
        self.stop_token_ids = self._stop_ids(stop_tokens)

        vocab_size = len(tokenizer)
        self._action_mask = self._static_mask(vocab_size, allowed_tokens, banned_tokens)
        self.action_space = spaces.Discrete(vocab_size)
        self.observation_space = spaces.Dict(
            {
                "input_ids": spaces.Box(0, vocab_size - 1, shape=(self.window,), dtype=np.int64),
                "attention_mask": spaces.Box(0, 1, shape=(self.window,), dtype=np.int64),
            }
        )
        self._prompt: Prompt | None = None
        self._ids: list[int] = []  # prompt + generated token ids, unpadded
        self._new_ids: list[int] = []
        self._last_score = 0.0
        self._done = False

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _truncate(self, prompt: Prompt, ids: list[int], keep: int) -> tuple[Prompt, list[int]]:
        """The first ``keep`` tokens of a prompt; its text becomes what they decode to, so the reward sees
        the prompt the LM saw."""
        if len(ids) <= keep:
            return prompt, ids
        return Prompt(self.tokenizer.decode(ids[:keep]), prompt.references), ids[:keep]

    def _token_ids(self, tokens: Sequence[str | int], argument: str) -> list[int]:
        """Ids of token strings (or ids), with an error that names ``argument`` for unknown ones."""
        ids = []
        for token in tokens:
            if isinstance(token, (int, np.integer)):
                token_id = int(token) if 0 <= token < len(self.tokenizer) else None
            else:
                token_id = self.tokenizer.convert_tokens_to_ids(token)
                if token_id == self.tokenizer.unk_token_id and token != self.tokenizer.unk_token:
                    token_id = None
            if token_id is None:
                raise ValueError(f"{argument}: {token!r} is not a token of the vocabulary "
                                 f"(token strings as the tokenizer spells them, e.g. 'Ġgreat', or ids).")
            ids.append(token_id)
        return ids

    def _stop_ids(self, stop_tokens: Sequence[str] | None) -> frozenset[int]:
        if stop_tokens is None:
            eos = self.tokenizer.eos_token_id
            return frozenset() if eos is None else frozenset([eos])
        return frozenset(self._token_ids(stop_tokens, "stop_tokens"))

    def _static_mask(self, vocab_size: int, allowed: Sequence[str | int] | None,
                     banned: Sequence[str | int] | None) -> np.ndarray:
        if allowed is not None and banned is not None:
            raise ValueError("pass allowed_tokens or banned_tokens, not both.")
        mask = np.ones(vocab_size, dtype=bool)
        if allowed is not None:
            mask[:] = False
            mask[self._token_ids(allowed, "allowed_tokens")] = True
        if banned is not None:
            mask[self._token_ids(banned, "banned_tokens")] = False
        mask[list(self.stop_token_ids)] = True
        return mask

    def action_masks(self) -> np.ndarray:
        """``(vocab_size,)`` bool: the tokens the agent may emit (sb3-contrib MaskablePPO calls this)."""
        return self._action_mask.copy()

    @property
    def num_new_tokens(self) -> int:
        return len(self._new_ids)

    @property
    def stopped(self) -> bool:
        """The episode ended with a stop token (EOS), not at the token budget."""
        return bool(self._new_ids) and self._new_ids[-1] in self.stop_token_ids

    @property
    def completion(self) -> str:
        return self.tokenizer.decode(self._new_ids, skip_special_tokens=True)

    def _observation(self) -> Observation:
        pad = self.window - len(self._ids)
        input_ids = np.full(self.window, self.tokenizer.pad_token_id, dtype=np.int64)
        input_ids[pad:] = self._ids
        attention_mask = np.zeros(self.window, dtype=np.int64)
        attention_mask[pad:] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def _info(self) -> dict[str, Any]:
        return {"prompt": self._prompt.text, "completion": self.completion, "num_new_tokens": self.num_new_tokens}

    def _score(self, completion: str) -> float:
        return float(score(self.reward, [self._prompt.text], [completion], [self._prompt.references])[0])

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if options and "prompt" in options:
            self._prompt = Prompt(options["prompt"], tuple(options.get("references", ())))
            prompt_ids = self._encode(self._prompt.text)
            if self.truncate_prompts:
                self._prompt, prompt_ids = self._truncate(self._prompt, prompt_ids, self.max_prompt_tokens)
            if len(prompt_ids) > self.max_prompt_tokens:
                raise ValueError(
                    f"options['prompt'] has {len(prompt_ids)} tokens, more than max_prompt_tokens="
                    f"{self.max_prompt_tokens}; make the env with a larger max_prompt_tokens."
                )
        else:
            index = int(self.np_random.integers(len(self.prompts)))
            self._prompt, prompt_ids = self.prompts[index], self.prompt_ids[index]
        self._ids = list(prompt_ids)
        self._new_ids = []
        self._done = False
        self._last_score = self._score("") if self.reward_mode == "dense" else 0.0
        if self.render_mode == "human":
            self.render()
        return self._observation(), self._info()

    def step(self, action: int | np.integer):
        if self._prompt is None:
            raise RuntimeError("step() called before reset(); call env.reset() first.")
        if self._done:
            raise RuntimeError("step() called after the episode ended; call env.reset() to start a new one.")
        if not self.action_space.contains(action):
            raise ValueError(
                f"action={action!r} is not a token id of the vocabulary: expected an integer in "
                f"[0, {self.action_space.n - 1}] (action_space={self.action_space})."
            )
        token = int(action)
        self._ids.append(token)
        self._new_ids.append(token)
        terminated = token in self.stop_token_ids or len(self._new_ids) >= self.max_new_tokens
        self._done = terminated
        if self.reward_mode == "dense":
            new_score = self._score(self.completion)
            reward, self._last_score = new_score - self._last_score, new_score
        else:
            reward = self._score(self.completion) if terminated and not self.defer_reward else 0.0
        info = self._info()
        if terminated and self.defer_reward:
            info.update(pending_reward=True, references=self._prompt.references)
        if self.render_mode == "human":
            self.render()
        return self._observation(), reward, terminated, False, info

    def get_state(self) -> dict[str, Any]:
        """The in-progress episode and the RNG, for exact checkpoint/resume (see :meth:`set_state`)."""
        return {"prompt": self._prompt, "ids": list(self._ids), "new_ids": list(self._new_ids), "done": self._done,
                "last_score": self._last_score, "rng": self.np_random.bit_generator.state}

    def set_state(self, state: dict[str, Any]) -> None:
        self._prompt, self._done, self._last_score = state["prompt"], state["done"], state["last_score"]
        self._ids, self._new_ids = list(state["ids"]), list(state["new_ids"])
        self.np_random.bit_generator.state = state["rng"]

    def render(self) -> str | None:
        # gym.make warns about modes outside metadata["render_modes"] (SB3's make_vec_env asks for
        # "rgb_array"); a text env has no picture to give them.
        if self.render_mode not in self.metadata["render_modes"] or self._prompt is None:
            return None
        text = f"{self._prompt.text}\x1b[1m{self.completion}\x1b[0m"
        if self.render_mode == "human":
            print(text)
            return None
        return text
