"""TextGen-LongGridWorld-v0: a 14x14 grid walk of 18-26 moves, the map first, the agent's surroundings every turn:
episodes of 1k-2k tokens."""

from __future__ import annotations

import functools
from typing import Any

from lm_gym.models import ASSETS_DIR
from lm_gym.multiturn import MultiTurnEnv
from lm_gym.tasks.grid_world import GridWorld, Layout, way_to_goal

LONG_GRID_WORLD_MODEL = ASSETS_DIR / "long-grid-world-lm"
"""The bundled GPT-2 (2,048 positions) that walks the big grid, carelessly (``scripts/build_long_grid_world_lm.py``)."""

SIZE = 14
WALLS = 40
DISTANCES = (18, 26)  # every instance's shortest path: long enough that even the best walk is over 1,024 tokens
MAX_TURNS = 36
VIEW = 2  # the agent sees the cells up to 2 away: a 5x5 view
MOVE_COST = 0.02  # GridWorld's 0.05 would eat the goal's 1.0 over a 20-move walk
MAX_TOKENS = 2_048  # the longest walk: the map and 36 turns of a move, EOS and a view, with room


def draw(layout: Layout, position: tuple[int, int], around: int | None = None) -> str:
    """The map (or the cells up to ``around`` away from ``position``), one line per row: ``#`` a wall or beyond the
    edge, ``@`` the agent, ``*`` the goal, ``.`` a free cell."""
    def cell(x: int, y: int) -> str:
        if (x, y) == position:
            return "@"
        if not (0 <= x < layout.size and 0 <= y < layout.size) or (x, y) in layout.walls:
            return "#"
        return "*" if (x, y) == layout.goal else "."
    if around is None:
        xs = ys = range(layout.size)
    else:
        xs, ys = range(position[0] - around, position[0] + around + 1), range(position[1] - around, position[1] + around + 1)
    return "\n".join("".join(cell(x, y) for x in xs) for y in ys)


class LongGridWorld(GridWorld):
    """:class:`lm_gym.tasks.GridWorld` on a 14x14 grid with 40 walls: the whole map first, the surroundings after.

    The first message is ``"14x14 grid:"``, the map (``#`` walls, ``@`` the agent, ``*`` the goal, ``.`` free) and
    where the goal lies (``"goal 5 right 3 down"``); every reply after a move is the 5x5 view around the agent (the
    edge drawn as walls) and the same line (``"bump, ..."`` after a wall or the edge). Moves, costs and the end are
    GridWorld's; instances have shortest paths of 18 to 26 moves and the walk stops after 36 turns.
    """

    grid = dict(size=SIZE, walls=WALLS, distances=DISTANCES)
    move_cost = MOVE_COST

    def __init__(self, split: str = "train", max_turns: int = MAX_TURNS):
        super().__init__(split, max_turns)

    def first_message(self) -> str:
        return f"{SIZE}x{SIZE} grid:\n{draw(self.layout, self.position)}\n{way_to_goal(self.layout, self.position)}"

    def show(self, reply: str) -> str:
        return f"{draw(self.layout, self.position, VIEW)}\nyou {self.position[0]},{self.position[1]}. {reply}"


class LongGridWorldEnv(MultiTurnEnv):
    """
    ## Description

    A long-horizon task with a known optimum: walk from a start cell to a goal on a 14x14 grid with 40 wall cells,
    one move word per turn, at the token level (:class:`lm_gym.MultiTurnEnv` over :class:`LongGridWorld`). The first
    message draws the whole map (about 230 tokens); each reply draws the 5x5 view around the agent and says where
    it stands and where the goal lies (about 45 tokens). Shortest paths are 18 to 26 moves, so a walk is 1,050-2,000
    tokens of which the agent writes 2 per turn: even the best walk of every instance is over 1,024 tokens. Each
    instance's optimum is its breadth-first-search shortest path (:func:`lm_gym.tasks.grid_world.optimal_return`,
    0.61 on average over the 100 held-out layouts). The bundled LM (``scripts/build_long_grid_world_lm.py``, 2,048
    positions) learned from a scripted walker that takes a shortest-path move 75% of the time and a random one
    otherwise, and starts well below the optimum.

    ## Action Space

    ``Discrete(len(tokenizer))`` over the bundled word-level tokenizer (the move words, digits, the map's
    characters, the host's words, EOS, pad).

    ## Observation Space

    TextGen-v0's ``Dict`` of ``input_ids`` / ``attention_mask``, ``Box(shape=(2048,), dtype=int64)``: the whole walk.

    ## Rewards

    ``-0.02`` for each turn (a move, a bump or a turn without a move word); ``+1`` on top on the turn that reaches
    the goal. Return of a shortest path of length d: ``1 - 0.02 d``.

    ## Starting State

    A layout of the split: ``split="train"`` (4,000 layouts) or ``"test"`` (100 others, held out); the text env's seed
    picks it (``reset(options={"text_env_seed": i})``). Every layout's goal is 18 to 26 moves from the start.

    ## Episode End

    Terminated at the goal or after 36 turns; an agent turn is one move word and EOS (the env ends a longer one).

    ## Arguments

    ``gym.make("TextGen-LongGridWorld-v0", split="train", **multi_turn_env_kwargs)``.

    ## Version History

    * v0: Initial version (lm-gym 0.6).
    """

    def __init__(self, split: str = "train", **kwargs: Any):
        super().__init__(**{**long_grid_world_defaults(split), **kwargs})


def long_grid_world_defaults(split: str = "train") -> dict[str, Any]:
    """The ``MultiTurnEnv`` arguments that make ``TextGen-LongGridWorld-v0`` on ``split``."""
    return dict(text_env=functools.partial(LongGridWorld, split), model=str(LONG_GRID_WORLD_MODEL),
                max_tokens=MAX_TOKENS, max_turn_tokens=2, max_turns=MAX_TURNS, reply_template="\n{reply}\n")
