"""TextGenEnv: text generation as a token-level Gymnasium environment."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from transformers import PreTrainedTokenizerBase

from lm_gym.models import ModelRef, start_token_ids, tokenizer_for
from lm_gym.prompts import Prompt, PromptSource, load_prompts
from lm_gym.rewards import Reward, make_reward, score
from lm_gym.vocabulary import check_action, token_id

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
    ``reset(options={"prompt": "..."})`` starts from the given text instead. The observation starts with the
    special tokens the tokenizer puts at the start of a sequence (the BOS of Llama-, Mistral- or Gemma-style
    tokenizers; none for GPT-2's), then the prompt's tokens; they count toward ``max_prompt_tokens``.

    ## Episode End

    The episode terminates when the agent emits a stop token (the tokenizer's EOS by default) or when
    ``max_new_tokens`` tokens have been generated. Both end the task itself, so ``terminated=True`` and
    ``truncated=False``: the task is to write at most ``max_new_tokens`` tokens and the reward scores the text
    as it is then, so there is no later state whose value an algorithm should bootstrap from (``truncated``
    means "cut short, would have gone on"). The observation does not show how many tokens remain (prompts of
    different lengths fill the window differently); a policy that needs it can count the tokens it wrote.

    ## Info

    Every ``reset`` and ``step`` returns the same keys, as vectorized consumers (Gymnasium's vector envs,
    TorchRL) expect: ``{"prompt": str, "completion": str, "num_new_tokens": int}``. ``completion`` is the
    decoded completion on the step that ends the episode and ``""`` before it, so a step costs no decoding;
    ``env.completion`` decodes the tokens so far on demand.

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
    * ``render_mode``: ``"ansi"`` (prompt + completion as text), ``"human"`` (printed each step) or
      ``"rgb_array"`` (the text drawn on a frame: SB3's ``make_vec_env`` asks for it, ``VecVideoRecorder``
      records it).

    ## Version History

    * v0: Initial version. Since lm-gym 0.2, ``info`` carries the completion only on the last step (it was
      decoded on every step before); since 0.4 every step's ``info`` has the same keys (``completion`` is
      ``""`` until the last step). Observations, rewards and episode ends are unchanged.
    """

    metadata = {"render_modes": ["ansi", "human", "rgb_array"], "render_fps": 4}

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
        check_render_mode(render_mode, self.metadata["render_modes"])
        self.tokenizer = tokenizer = tokenizer_for(model, tokenizer)
        self.reward = make_reward(reward, **(reward_kwargs or {}))
        self.reward_mode = reward_mode
        self.render_mode = render_mode
        self.max_new_tokens = max_new_tokens
        self.defer_reward = False

        if truncate_prompts and max_prompt_tokens is None:
            raise ValueError("truncate_prompts=True needs max_prompt_tokens=N: how many leading tokens to keep.")
        self.truncate_prompts = truncate_prompts
        self.prompts: list[Prompt] = load_prompts(prompts)
        self.start_ids = start_token_ids(self.tokenizer)  # BOS, for tokenizers whose models expect one
        self.prompt_ids = [self.start_ids + ids for ids in
                           self.tokenizer([p.text for p in self.prompts], add_special_tokens=False)["input_ids"]]
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
        self.pad_token_id = self.tokenizer.pad_token_id
        self._prompt: Prompt | None = None
        # The observation, updated in place by each step (a new pair per episode: shallow copies of this env,
        # as make_vec_env and evaluation make them, must not share it).
        self._input_ids = np.full(self.window, self.pad_token_id, dtype=np.int64)
        self._attention_mask = np.zeros(self.window, dtype=np.int64)
        self._new_ids: list[int] = []
        self._last_score = 0.0
        self._done = False

    def _encode_prompt(self, text: str) -> list[int]:
        """A prompt's ids: the tokenizer's start tokens (BOS, where it has one), then the text without special tokens."""
        return self.start_ids + self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _truncate(self, prompt: Prompt, ids: list[int], keep: int) -> tuple[Prompt, list[int]]:
        """The first ``keep`` tokens of a prompt; its text becomes what they decode to, so the reward sees
        the prompt the LM saw."""
        if len(ids) <= keep:
            return prompt, ids
        return Prompt(self.tokenizer.decode(ids[len(self.start_ids):keep]), prompt.references), ids[:keep]

    def _token_ids(self, tokens: Sequence[str | int], argument: str) -> list[int]:
        return [token_id(self.tokenizer, token, argument) for token in tokens]

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
        """The generated text so far (decoded on each access)."""
        return self.decode(self._new_ids)

    def decode(self, new_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(new_ids, skip_special_tokens=True)

    def check_action(self, action: Any) -> int:
        """``action`` as a token id, or a ValueError that names the vocabulary's range."""
        return check_action(action, self.action_space.n)

    def start_prompt(self, rng: np.random.Generator, options: dict[str, Any] | None = None) -> tuple[Prompt, list[int]]:
        """The prompt of a new episode and its token ids: ``options["prompt"]`` if given, else one drawn with ``rng``."""
        if not (options and "prompt" in options):
            index = int(rng.integers(len(self.prompts)))
            return self.prompts[index], self.prompt_ids[index]
        text = options["prompt"]
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"options['prompt']={text!r}: give a non-empty string (the LM needs at least one token "
                             "to continue), or leave 'prompt' out to draw one of the env's prompts.")
        prompt = Prompt(text, tuple(options.get("references", ())))
        prompt_ids = self._encode_prompt(prompt.text)
        if self.truncate_prompts:
            prompt, prompt_ids = self._truncate(prompt, prompt_ids, self.max_prompt_tokens)
        if len(prompt_ids) > self.max_prompt_tokens:
            raise ValueError(
                f"options['prompt'] has {len(prompt_ids)} tokens, more than max_prompt_tokens="
                f"{self.max_prompt_tokens}; make the env with a larger max_prompt_tokens."
            )
        return prompt, prompt_ids

    def score(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> np.ndarray:
        """The reward of each (prompt, completion), in one call of the reward: ``(len(prompts),)`` float64."""
        return score(self.reward, [p.text for p in prompts], completions, [p.references for p in prompts])

    def _observation(self) -> Observation:
        return {"input_ids": self._input_ids.copy(), "attention_mask": self._attention_mask.copy()}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._prompt, prompt_ids = self.start_prompt(self.np_random, options)
        self._input_ids, self._attention_mask = np.empty((2, self.window), dtype=np.int64)
        place_prompt(self._input_ids, self._attention_mask, prompt_ids, self.pad_token_id)
        self._new_ids = []
        self._done = False
        self._last_score = self.score([self._prompt], [""])[0] if self.reward_mode == "dense" else 0.0
        if self.render_mode == "human":
            self.render()
        return self._observation(), self._info("")

    def step(self, action: int | np.integer):
        if self._prompt is None:
            raise RuntimeError("step() called before reset(); call env.reset() first.")
        if self._done:
            raise RuntimeError("step() called after the episode ended; call env.reset() to start a new one.")
        token = self.check_action(action)
        append_token(self._input_ids, self._attention_mask, token)
        self._new_ids.append(token)
        terminated = token in self.stop_token_ids or len(self._new_ids) >= self.max_new_tokens
        self._done = terminated
        reward, info = 0.0, self._info("")
        if terminated:
            completion = self.completion
            info = self._info(completion)
            if self.reward_mode == "dense":
                new_score = self.score([self._prompt], [completion])[0]
                reward, self._last_score = new_score - self._last_score, new_score
            elif self.defer_reward:
                info.update(pending_reward=True, references=self._prompt.references)
            else:
                reward = self.score([self._prompt], [completion])[0]
        elif self.reward_mode == "dense":
            new_score = self.score([self._prompt], [self.completion])[0]
            reward, self._last_score = new_score - self._last_score, new_score
        if self.render_mode == "human":
            self.render()
        return self._observation(), float(reward), terminated, False, info

    def _info(self, completion: str) -> dict[str, Any]:
        return {"prompt": self._prompt.text, "completion": completion, "num_new_tokens": len(self._new_ids)}

    def get_state(self) -> dict[str, Any]:
        """The in-progress episode and the RNG, for exact checkpoint/resume (see :meth:`set_state`)."""
        ids = self._input_ids[self._attention_mask.astype(bool)].tolist()
        return {"prompt": self._prompt, "ids": ids, "new_ids": list(self._new_ids), "done": self._done,
                "last_score": self._last_score, "rng": self.np_random.bit_generator.state}

    def set_state(self, state: dict[str, Any]) -> None:
        self._prompt, self._done, self._last_score = state["prompt"], state["done"], state["last_score"]
        self._input_ids, self._attention_mask = np.empty((2, self.window), dtype=np.int64)
        place_prompt(self._input_ids, self._attention_mask, state["ids"], self.pad_token_id)
        self._new_ids = list(state["new_ids"])
        self.np_random.bit_generator.state = state["rng"]

    def render(self) -> str | np.ndarray | None:
        if self._prompt is None:
            return None
        return render_text(self._prompt.text, self.completion, self.render_mode)


def check_render_mode(mode: str | None, modes: list[str]) -> None:
    if mode is not None and mode not in modes:
        raise ValueError(f"render_mode={mode!r}: choose one of {modes} or None.")


def render_text(prompt: str, completion: str, mode: str | None) -> str | np.ndarray | None:
    """``"ansi"``: prompt + completion (in bold) as a string; ``"human"``: print it; ``"rgb_array"``: the text
    drawn on a white ``(FRAME_HEIGHT, FRAME_WIDTH, 3)`` uint8 frame (what SB3's ``make_vec_env`` asks for,
    and ``VecVideoRecorder`` records), the completion in blue."""
    if mode == "ansi":
        return f"{prompt}\x1b[1m{completion}\x1b[0m"
    if mode == "human":
        print(f"{prompt}\x1b[1m{completion}\x1b[0m")
    if mode != "rgb_array":
        return None
    from PIL import Image, ImageDraw  # Pillow comes with matplotlib

    image = Image.new("RGB", (FRAME_WIDTH, FRAME_HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    x, y, line_height = 8, 8, 14
    for text, color in ((prompt, "black"), (completion, "royalblue")):
        for word in re.split(r"(\s+)", text):
            width = draw.textlength(word)
            if x + width > FRAME_WIDTH - 8 and word.strip():
                x, y = 8, y + line_height
            draw.text((x, y), word, fill=color)
            x += width
    return np.asarray(image)


FRAME_WIDTH, FRAME_HEIGHT = 512, 160


def place_prompt(input_ids: np.ndarray, attention_mask: np.ndarray, token_ids: Sequence[int], pad_token_id: int) -> None:
    """Write ``token_ids`` left-padded into one observation row (``(window,)`` arrays), in place."""
    start = input_ids.shape[-1] - len(token_ids)
    input_ids[:start] = pad_token_id
    input_ids[start:] = token_ids
    attention_mask[:start] = 0
    attention_mask[start:] = 1


def append_token(input_ids: np.ndarray, attention_mask: np.ndarray, tokens: int | np.ndarray) -> None:
    """Shift observation rows (``(..., window)``) left by one column and write ``tokens`` into the last, in place.

    The window holds ``max_prompt_tokens + max_new_tokens`` columns, so only padding ever falls off the left.
    """
    input_ids[..., :-1] = input_ids[..., 1:]
    input_ids[..., -1] = tokens
    attention_mask[..., :-1] = attention_mask[..., 1:]
    attention_mask[..., -1] = 1
