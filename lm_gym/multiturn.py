"""MultiTurnEnv: a text-level, multi-turn env (GEM's API) as a token-level TextGen env."""

from __future__ import annotations

import copy
import math
import numbers
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from transformers import PreTrainedTokenizerBase

from lm_gym.env import Observation, check_render_mode, place_prompt, render_text
from lm_gym.models import ModelRef, max_positions, tokenizer_for
from lm_gym.turns import TurnCodec
from lm_gym.vocabulary import check_action


@runtime_checkable
class TextEnv(Protocol):
    """GEM's core API (``gem/core.py``): what :class:`MultiTurnEnv` needs of a text env."""

    def reset(self, seed: int | None = None) -> tuple[str, dict[str, Any]]: ...

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]: ...


TextEnvSource = TextEnv | Callable[[], TextEnv] | str


@dataclass
class Turn:
    """One agent turn as the text env answered it."""

    agent_text: str
    reply: str
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any]
# Seeds that training envs draw for their text envs lie below this; held-out instances use seeds from here on.
HELD_OUT_SEEDS = 1_000_000
DEFAULT_MAX_TOKENS = 512  # the longest default window (max_tokens=None); a model with fewer positions sets it lower


def default_window(model: ModelRef, tokenizer: PreTrainedTokenizerBase | None) -> int:
    """``max_tokens=None``'s window: the positions the env's model can attend to, at most :data:`DEFAULT_MAX_TOKENS`.
    A model given by its tokenizer alone (``model=None``) is known by the tokenizer's ``model_max_length`` (which
    Hugging Face sets to a huge number when it does not know)."""
    limit = max_positions(model) if model is not None or tokenizer is None else tokenizer.model_max_length
    return min(DEFAULT_MAX_TOKENS, limit or DEFAULT_MAX_TOKENS)


def make_text_env(source: TextEnvSource) -> TextEnv:
    """A text env from an instance (returned as is), a callable that makes one (a class, a ``functools.partial``), or
    an id: ``"gem:ID"`` (``gem.make(ID)``, ``pip install 'lm-gym[gem]'``) or ``"textarena:ID"``
    (a single-player TextArena game through :class:`lm_gym.adapters.TextArenaEnv`)."""
    if isinstance(source, str):
        from lm_gym.adapters import text_env_from_id

        return text_env_from_id(source)
    if isinstance(source, TextEnv) and not isinstance(source, type):
        return source
    if callable(source):
        env = source()
        if not isinstance(env, TextEnv):
            raise TypeError(f"text_env={source!r} made {type(env).__name__}, which lacks reset(seed) -> (str, info) "
                            "and step(str) -> (str, reward, terminated, truncated, info).")
        return env
    raise TypeError(f"text_env={source!r}: expected a text env (reset(seed) and step(text), GEM's API), a callable "
                    "that makes one, or an id such as 'gem:game:GuessTheNumber-v0-easy'.")


class MultiTurnEnv(gym.Env[Observation, np.int64]):
    """
    ## Description

    An agent LM converses with a text env, one token at a time. The text env is anything with GEM's API
    (``reset(seed) -> (text, info)``, ``step(text) -> (text, reward, terminated, truncated, info)``): a game, a
    tool, a user simulator. Each step the agent picks its next token; a turn ends at a turn-end token (EOS, or
    the chat template's end-of-turn token) or after ``max_turn_tokens`` tokens. At a turn's end, in the same
    step, the env decodes only that turn's tokens, passes the text to ``text_env.step``, encodes the reply once
    and appends it (with the next generation prompt) to the observation. So the agent's tokens are kept exactly
    as sampled (nothing is re-encoded), the env's tokens are context and never actions (they never reach a loss),
    and each turn's reward is paid on the step of that turn's last agent token.

    ## Action Space

    ``Discrete(len(tokenizer))``: the agent's next token.

    ## Observation Space

    TextGen-v0's: a ``Dict`` of ``input_ids`` and ``attention_mask``, ``Box(shape=(max_tokens,), dtype=int64)``,
    left-padded, the newest token last. It holds the whole conversation: the first message, every agent turn and
    every reply, in the order they happened. Between two steps a row grows by one token, or by the end token
    plus a reply at a turn end: the earlier row is always a prefix of the later one, which is what the rollout's
    KV cache and the update's shared forwards rely on.

    ## Rewards

    The text env's reward of a turn, on the step that ends the turn; 0 on the other steps.

    ## Starting State

    ``reset(seed=...)`` draws the text env's seed from the env's RNG (below ``HELD_OUT_SEEDS``) and encodes the text
    env's first message: as the first user turn plus the generation prompt with a chat template, else as
    ``first_template``, after the tokenizer's BOS where it has one. ``reset(options={"text_env_seed": s})`` starts
    the instance of seed ``s`` (how group sampling gives a group's episodes the same instance).

    ## Episode End

    ``terminated`` when the text env says so (a game won or lost); ``truncated`` when the text env truncates,
    after ``max_turns`` turns, or when the window cannot hold the next reply plus a whole agent turn. A truncated
    episode's last observation holds the last reply and the next generation prompt, as a mid-episode one would
    (SB3 bootstraps the value from it, so it is a state the critic trains on); where the reply plus a whole turn
    does not fit (the window is full), it ends at the agent's end token instead, a state the critic never sees
    mid-episode, so that bootstrap is less reliable: give long conversations a larger ``max_tokens``.
    The history is never cut: ``max_tokens`` bounds the whole conversation (the first message pinned by
    construction), and a first message longer than ``max_tokens - max_turn_tokens`` is refused at reset.

    ## Info

    The same keys with the same types on ``reset`` and on every step (what TorchRL's ``GymEnv`` and Gymnasium's
    vector envs expect): ``prompt`` (the first message), ``completion`` (the conversation after it; ``""`` until
    the last step, as TextGen-v0's), ``num_new_tokens`` (the agent's tokens so far), ``turn`` (turns played),
    ``turn_end`` (whether this step ended a turn), ``agent_text``, ``reply_text`` and ``turn_reward`` (that turn's;
    ``""``, ``""``, 0.0 on other steps), ``transcript`` (``[(agent_text, reply_text), ...]`` so far),
    ``window_full`` (the episode ended because the next reply did not fit), ``text_env_seed`` and
    ``text_env_info`` (the text env's own info from its latest reset or step; its keys are the text env's).

    ## Arguments

    ```python
    gym.make("TextGen-MultiTurn-v0", text_env=..., model=None, tokenizer=None, max_tokens=None,
             max_turn_tokens=32, max_turns=None, turn_end_tokens=None, use_chat_template=None,
             first_template="{observation}\\n", reply_template="\\n{reply}\\n", render_mode=None)
    ```

    * ``text_env``: an instance, a callable that makes one, or an id: ``"gem:ID"`` (GEM, ``lm-gym[gem]``),
      ``"textarena:ID"`` (a single-player TextArena game). Copies of this env (vector envs, evaluation) make
      their own text env from a callable or id, or deep-copy an instance.
    * ``model`` / ``tokenizer``: the agent's tokenizer (``None``: the bundled one).
    * ``max_tokens``: the observation window, the whole conversation. ``None``: what the model can attend to
      (its config's ``max_position_embeddings``; with only a ``tokenizer``, its ``model_max_length``), at most
      :data:`DEFAULT_MAX_TOKENS` (512), so that the env and a policy on the same model fit together.
    * ``max_turn_tokens``: the longest agent turn; the env then appends the end token itself.
    * ``max_turns``: turns per episode (``None``: as many as the text env and the window allow).
    * ``turn_end_tokens``, ``use_chat_template``, ``first_template``, ``reply_template``: see :class:`TurnCodec`.
    * ``render_mode``: ``"ansi"``, ``"human"`` or ``"rgb_array"``, as TextGen-v0.

    ## Version History

    * v0: Initial version (lm-gym 0.3). Since lm-gym 0.4 every step's ``info`` has the same keys (mid-turn steps
      returned ``{}``, and only turn ends and the last step carried their keys). Since lm-gym 0.5 a truncated
      episode's last observation holds the last reply (where it fits), a text env's first message or reply that
      breaks GEM's contract is refused with a message, and the text env's global random streams are seeded from
      each episode's text-env seed (copies no longer replay one stream).
    """

    metadata = {"render_modes": ["ansi", "human", "rgb_array"], "render_fps": 4}
    reward_mode = "turn"  # rewards come per turn from the text env (group baselines sum them per episode)

    def __init__(
        self,
        text_env: TextEnvSource,
        model: ModelRef = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        max_tokens: int | None = None,
        max_turn_tokens: int = 32,
        max_turns: int | None = None,
        turn_end_tokens: Sequence[str | int] | None = None,
        use_chat_template: bool | None = None,
        first_template: str = "{observation}\n",
        reply_template: str = "\n{reply}\n",
        render_mode: str | None = None,
    ):
        if max_turn_tokens < 1:
            raise ValueError(f"max_turn_tokens={max_turn_tokens}: must be at least 1.")
        if max_turns is not None and max_turns < 1:
            raise ValueError(f"max_turns={max_turns}: must be at least 1 (or None: no limit).")
        if max_tokens is None:
            max_tokens = default_window(model, tokenizer)
        self.tokenizer = tokenizer = tokenizer_for(model, tokenizer)
        if max_tokens < max_turn_tokens + 2:
            raise ValueError(f"max_tokens={max_tokens} cannot hold a first message and an agent turn of "
                             f"max_turn_tokens={max_turn_tokens}; raise max_tokens.")
        check_render_mode(render_mode, self.metadata["render_modes"])
        self.codec = TurnCodec(tokenizer, use_chat_template, turn_end_tokens, first_template, reply_template)
        self.text_env_source = text_env
        self.text_env = make_text_env(text_env)
        self.text_env_name = text_env if isinstance(text_env, str) else type(self.text_env).__name__
        self.window, self.max_turn_tokens, self.max_turns = max_tokens, max_turn_tokens, max_turns
        self.render_mode = render_mode
        vocab_size = len(tokenizer)
        self.action_space = spaces.Discrete(vocab_size)
        self.observation_space = spaces.Dict({
            "input_ids": spaces.Box(0, vocab_size - 1, shape=(max_tokens,), dtype=np.int64),
            "attention_mask": spaces.Box(0, 1, shape=(max_tokens,), dtype=np.int64),
        })
        self.pad_token_id = tokenizer.pad_token_id
        self.stop_token_ids = self.codec.turn_end_ids
        self._ids: list[int] = []  # the whole conversation so far
        self._turn_ids: list[int] = []  # the agent's tokens of the turn in progress
        self._transcript: list[tuple[str, str]] = []
        self._first_text: str | None = None
        self._agent_tokens = 0
        self._text_env_seed, self._text_env_info = -1, {}
        self._done = False
        self._terminated = False
        self._text_env_streams: tuple[Any, Any] | None = None  # the text env's own global random streams

    @property
    def max_new_tokens(self) -> int:
        """The most agent tokens an episode can hold (what rollout-length checks compare against)."""
        turns = self.max_turns if self.max_turns is not None else max(1, self.window // (self.max_turn_tokens + 1))
        return min(turns * self.max_turn_tokens, self.window)

    def __copy__(self) -> MultiTurnEnv:
        """A copy with its own text env (made again from a callable or id; a deep copy of an instance), so copies
        never share a game in progress."""
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        source = self.text_env_source
        clone.text_env = copy.deepcopy(self.text_env) if isinstance(source, TextEnv) and not isinstance(source, type) \
            else make_text_env(source)
        clone._ids, clone._turn_ids, clone._transcript = list(self._ids), list(self._turn_ids), list(self._transcript)
        return clone

    # ----- Gymnasium API -----

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = options or {}
        text_seed = options.get("text_env_seed")
        if text_seed is None:
            text_seed = int(self.np_random.integers(HELD_OUT_SEEDS))
        text, text_info = self._call_text_env("reset", seed=int(text_seed))
        ids = self.codec.first(text)
        if not ids:
            raise ValueError(f"the first message of text env {self.text_env_name} (seed {text_seed}), {text!r}, "
                             f"encodes to no tokens with first_template={self.codec.first_template!r}: the agent needs "
                             "at least one token to continue; have the text env say something, or put text around "
                             "{observation} in first_template.")
        if len(ids) + self.max_turn_tokens + 1 > self.window:
            raise ValueError(f"the first message of text env {self.text_env_name} (seed {text_seed}) is {len(ids)} "
                             f"tokens; with an agent turn of max_turn_tokens={self.max_turn_tokens} it does not fit "
                             f"max_tokens={self.window}: raise max_tokens.")
        self._ids, self._turn_ids, self._transcript = ids, [], []
        self._first_text, self._agent_tokens, self._done, self._terminated = text, 0, False, False
        self._text_env_seed, self._text_env_info = int(text_seed), dict(text_info or {})
        if self.render_mode == "human":
            self.render()
        return self._observation(), self.step_info()

    def step(self, action: int | np.integer):
        if self._first_text is None:
            raise RuntimeError("step() called before reset(); call env.reset() first.")
        if self._done:
            raise RuntimeError("step() called after the episode ended; call env.reset() to start a new one.")
        if not self.add_agent_token(self.check_action(action)):
            return self._observation(), 0.0, False, False, self.step_info()
        turn = self.end_turn()
        return self.finish_turn(turn, self.codec.replies([turn.reply])[0] if self.wants_reply(turn) else [])

    def render(self) -> str | np.ndarray | None:
        if self._first_text is None:
            return None
        return render_text(self._first_text, self.completion, self.render_mode)

    def action_masks(self) -> np.ndarray:
        """All tokens allowed (MaskablePPO asks; a text env judges invalid turns itself)."""
        return np.ones(self.action_space.n, dtype=bool)

    # ----- the phases of a step (TextGenVecEnv-style vector envs call them across envs) -----

    def check_action(self, action: Any) -> int:
        """``action`` as a token id, or a ValueError that names the vocabulary's range."""
        return check_action(action, self.action_space.n)

    def add_agent_token(self, token: int) -> bool:
        """Append the agent's token; True when it ends the turn (a turn-end token, or ``max_turn_tokens``)."""
        self._ids.append(token)
        self._turn_ids.append(token)
        self._agent_tokens += 1
        return token in self.codec.turn_end_ids or len(self._turn_ids) >= self.max_turn_tokens

    def end_turn(self) -> Turn:
        """Close the agent's turn (appending the end token if the turn ran out of tokens) and play it in the text
        env."""
        if self._turn_ids[-1] not in self.codec.turn_end_ids:
            self._ids.append(self.codec.end_id)
        agent_ids = [t for t in self._turn_ids if t not in self.codec.turn_end_ids]
        agent_text = self.codec.decode(agent_ids)
        self._turn_ids = []
        reply, reward, terminated, truncated, info = self._call_text_env("step", agent_text)
        return Turn(agent_text, reply, reward, terminated, truncated, info)

    def episode_over(self, turn: Turn) -> bool:
        """Whether the episode ends with this turn (before the window is looked at): no reply needs encoding."""
        return turn.terminated or turn.truncated or (self.max_turns is not None
                                                     and len(self._transcript) + 1 >= self.max_turns)

    def wants_reply(self, turn: Turn) -> bool:
        """Whether the reply to this turn goes into the observation: always, unless the text env ended the episode
        (terminated). A truncated episode's last observation is where SB3 bootstraps the value from, so it gets the
        reply and the next generation prompt too: a state that also occurs mid-episode, which the critic learns."""
        return not turn.terminated

    def finish_turn(self, turn: Turn, reply_ids: list[int]):
        """Append the encoded reply (see :meth:`wants_reply`; when it fits) and build the step's return."""
        over = self.episode_over(turn)
        agent_text, reply, reward, terminated = turn.agent_text, turn.reply, turn.reward, turn.terminated
        self._transcript.append((agent_text, reply))
        # The reply fits when a whole agent turn still fits after it, as every mid-episode state allows.
        fits = len(self._ids) + len(reply_ids) + self.max_turn_tokens + 1 <= self.window
        window_full = not over and not fits
        if self.wants_reply(turn) and fits:
            self._ids.extend(reply_ids)
        truncated = (turn.truncated or over or window_full) and not terminated
        self._done, self._terminated = terminated or truncated, terminated
        self._text_env_info = turn.info
        if self.render_mode == "human":
            self.render()
        return self._observation(), reward, terminated, truncated, self.step_info(turn, window_full)

    def step_info(self, turn: Turn | None = None, window_full: bool = False) -> dict[str, Any]:
        """The step's info (see "Info"): ``turn`` is the turn this step ended, if any."""
        return {"prompt": self._first_text, "completion": self.completion if self._done else "",
                "num_new_tokens": self._agent_tokens, "turn": len(self._transcript), "turn_end": turn is not None,
                "agent_text": "" if turn is None else turn.agent_text, "reply_text": "" if turn is None else turn.reply,
                "turn_reward": 0.0 if turn is None else turn.reward, "transcript": list(self._transcript),
                "window_full": window_full, "text_env_seed": self._text_env_seed,
                "text_env_info": self._text_env_info}

    def reset_text_env(self, seed: int) -> tuple[str, dict[str, Any]]:
        """Reset only the text env, to the instance of ``seed`` (as an episode would start it); returns its first
        message and info. The env's own episode is not restarted: call ``reset`` before stepping again."""
        self._first_text = None  # step() now asks for a reset
        return self._call_text_env("reset", seed=int(seed))

    # ----- what evaluation and rendering read -----

    @property
    def num_new_tokens(self) -> int:
        """Agent tokens so far (the env's tokens are not counted)."""
        return self._agent_tokens

    @property
    def stopped(self) -> bool:
        """The text env ended the episode (a game won or lost), not a turn or window limit."""
        return self._terminated

    @property
    def completion(self) -> str:
        """The conversation after the first message: each agent turn and the reply to it."""
        return "".join(f"{agent}\n{reply}\n" for agent, reply in self._transcript)

    # ----- checkpoints -----

    def get_state(self) -> dict[str, Any]:
        """The episode so far, the text env (a deep copy: it must pickle) and the RNG, for exact resume."""
        return {"ids": list(self._ids), "turn_ids": list(self._turn_ids), "transcript": list(self._transcript),
                "first_text": self._first_text, "agent_tokens": self._agent_tokens, "done": self._done,
                "terminated": self._terminated, "text_env": copy.deepcopy(self.text_env),
                "text_env_streams": self._text_env_streams, "rng": self.np_random.bit_generator.state,
                "text_env_seed": self._text_env_seed, "text_env_info": self._text_env_info}

    def set_state(self, state: dict[str, Any]) -> None:
        self._ids, self._turn_ids = list(state["ids"]), list(state["turn_ids"])
        self._transcript, self._first_text = list(state["transcript"]), state["first_text"]
        self._agent_tokens, self._done, self._terminated = state["agent_tokens"], state["done"], state["terminated"]
        self.text_env = copy.deepcopy(state["text_env"])
        self._text_env_streams = state["text_env_streams"]
        self._text_env_seed, self._text_env_info = state.get("text_env_seed", -1), state.get("text_env_info", {})
        self.np_random.bit_generator.state = state["rng"]

    # ----- internals -----

    def _observation(self) -> Observation:
        input_ids = np.empty(self.window, dtype=np.int64)
        attention_mask = np.empty(self.window, dtype=np.int64)
        place_prompt(input_ids, attention_mask, self._ids, self.pad_token_id)
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def _call_text_env(self, method: str, *args, **kwargs):
        """Call the text env inside its own global random streams (Python's and numpy's legacy one), and check what it
        returns against GEM's contract.

        The streams are the text env's alone: GEM reseeds both at every reset, which would otherwise reseed the
        trainer's (SB3 shuffles minibatches with numpy's). At every reset they are seeded from the episode's text-env
        seed, as GEM's own envs seed themselves, so a text env that draws from ``random`` without seeding itself still
        plays a different instance in each env of a vector env, the same one for the same seed, and the same one in
        every episode of a group (which shares a seed)."""
        trainer_streams = random.getstate(), np.random.get_state()
        if method == "reset":
            random.seed(kwargs["seed"])
            np.random.seed(kwargs["seed"] % 2**32)
        elif self._text_env_streams is not None:
            random.setstate(self._text_env_streams[0])
            np.random.set_state(self._text_env_streams[1])
        where = f"reset(seed={kwargs.get('seed')})" if method == "reset" else \
            f"step() at turn {len(self._transcript) + 1} on agent text {args[0]!r}"
        try:
            result = getattr(self.text_env, method)(*args, **kwargs)
        except Exception as error:
            raise RuntimeError(f"text env {self.text_env_name} raised in {where}: {type(error).__name__}: {error}"
                               ) from error
        finally:
            self._text_env_streams = random.getstate(), np.random.get_state()
            random.setstate(trainer_streams[0])
            np.random.set_state(trainer_streams[1])
        return check_text_env_result(method, result, f"text env {self.text_env_name}: {where}")


CONTRACT = {"reset": "reset(seed) -> (observation: str, info: dict)",
            "step": "step(text) -> (observation: str, reward: float, terminated: bool, truncated: bool, info: dict)"}


def check_text_env_result(method: str, result: Any, where: str) -> tuple:
    """``result`` of a text env's ``reset`` or ``step`` as GEM's contract has it (:data:`CONTRACT`), with plain
    Python types (a ``None`` info becomes ``{}``), or a ValueError that says where, what came back and the contract."""
    def breach(what: str) -> ValueError:
        return ValueError(f"{where} returned {what}; a text env's contract (GEM's) is {CONTRACT[method]}.")

    size = 2 if method == "reset" else 5
    if not isinstance(result, tuple) or len(result) != size:
        shown = f"{len(result)} values {result!r}" if isinstance(result, tuple) else \
            f"a {type(result).__name__} {result!r}"
        raise breach(shown[:200])
    text, info = result[0], result[-1]
    if not isinstance(text, str):
        raise breach(f"an observation of type {type(text).__name__} ({text!r:.80})")
    if info is not None and not isinstance(info, dict):
        raise breach(f"an info of type {type(info).__name__} ({info!r:.80})")
    if method == "reset":
        return text, dict(info or {})
    _, reward, terminated, truncated, _ = result
    if isinstance(reward, bool) or not isinstance(reward, numbers.Real) or not math.isfinite(reward):
        raise breach(f"the reward {reward!r} (a {type(reward).__name__}); rewards must be finite numbers")
    for name, flag in (("terminated", terminated), ("truncated", truncated)):
        if not isinstance(flag, (bool, np.bool_)):
            raise breach(f"{name}={flag!r} (a {type(flag).__name__}), not a bool")
    return text, float(reward), bool(terminated), bool(truncated), dict(info or {})

