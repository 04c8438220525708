"""TextGen-GridWorld-v0: walk to a goal around walls on a small grid described in text, with its own bundled LM."""

from __future__ import annotations

import collections
import functools
import random
from dataclasses import dataclass
from typing import Any

from lm_gym.models import ASSETS_DIR
from lm_gym.multiturn import MultiTurnEnv

GRID_WORLD_MODEL = ASSETS_DIR / "grid-world-lm"
"""The bundled GPT-2 that walks the grid, carelessly (built by ``scripts/build_grid_world_lm.py``)."""

SIZE = 5  # the grid is SIZE x SIZE; cells are "x,y", x to the right, y downwards, from 0
WALLS = 4
MOVE_COST = 0.05
MAX_TURNS = 12
MAX_DISTANCE = 8  # instances whose shortest path is 2..8 moves, so that MAX_TURNS leaves room to stray
HELD_OUT_LAYOUTS = 100
MOVES = {"up": (0, -1), "down": (0, 1), "left": (-1, 0), "right": (1, 0)}
SPLITS = ("train", "test")

Cell = tuple[int, int]


@dataclass(frozen=True)
class Layout:
    """One instance: the wall cells, where the agent starts and the goal."""

    walls: frozenset[Cell]
    start: Cell
    goal: Cell

    def describe(self) -> str:
        walls = " ".join(f"{x},{y}" for x, y in sorted(self.walls))
        return f"{SIZE}x{SIZE} grid, walls {walls}. you {self.start[0]},{self.start[1]}. {way_to_goal(self, self.start)}"


def way_to_goal(layout: Layout, cell: Cell) -> str:
    """Where the goal lies from ``cell``, as the host says it: ``"goal 3 right 2 down"`` (walls not counted)."""
    dx, dy = layout.goal[0] - cell[0], layout.goal[1] - cell[1]
    parts = ([f"{abs(dx)} {'right' if dx > 0 else 'left'}"] if dx else []) + \
        ([f"{abs(dy)} {'down' if dy > 0 else 'up'}"] if dy else [])
    return "goal " + " ".join(parts)


def neighbours(cell: Cell, walls: frozenset[Cell]) -> dict[str, Cell]:
    """Where each move leads from ``cell``: a wall or the grid's edge leaves the agent where it is."""
    out = {}
    for move, (dx, dy) in MOVES.items():
        x, y = cell[0] + dx, cell[1] + dy
        out[move] = (x, y) if 0 <= x < SIZE and 0 <= y < SIZE and (x, y) not in walls else cell
    return out


def shortest_paths(layout: Layout) -> dict[Cell, int]:
    """Breadth-first search from the goal: the fewest moves from every reachable cell to it."""
    distance, queue = {layout.goal: 0}, collections.deque([layout.goal])
    while queue:
        cell = queue.popleft()
        for after in neighbours(cell, layout.walls).values():  # moves are reversible: the graph is undirected
            if after not in distance:
                distance[after] = distance[cell] + 1
                queue.append(after)
    return distance


def optimal_moves(layout: Layout, cell: Cell) -> list[str]:
    """The moves from ``cell`` that lie on a shortest path to the goal."""
    distance = shortest_paths(layout)
    return [move for move, after in neighbours(cell, layout.walls).items()
            if distance.get(after, 1 << 30) == distance[cell] - 1]


def optimal_return(layout: Layout) -> float:
    """The best return of an instance: the goal's 1.0 less ``MOVE_COST`` for each move of the shortest path."""
    return 1.0 - MOVE_COST * shortest_paths(layout)[layout.start]


@functools.cache
def layouts(split: str = "train") -> tuple[Layout, ...]:
    """The instances of a split, drawn once from a fixed seed and deduplicated: ``"test"`` holds the first 100,
    ``"train"`` the 4,000 after them, so no held-out layout is ever trained on."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: choose one of {list(SPLITS)}.")
    rng, seen, drawn = random.Random(0), set(), []
    cells = [(x, y) for x in range(SIZE) for y in range(SIZE)]
    while len(drawn) < HELD_OUT_LAYOUTS + 4000:
        chosen = rng.sample(cells, WALLS + 2)
        layout = Layout(frozenset(chosen[:WALLS]), chosen[WALLS], chosen[WALLS + 1])
        distance = shortest_paths(layout).get(layout.start)
        if layout not in seen and distance is not None and 2 <= distance <= MAX_DISTANCE:
            seen.add(layout)
            drawn.append(layout)
    return tuple(drawn[:HELD_OUT_LAYOUTS] if split == "test" else drawn[HELD_OUT_LAYOUTS:])


class GridWorld:
    """The grid as a text env (GEM's API): one layout per episode, moves as words.

    ``reset(seed)`` starts the split's layout ``seed mod len(split)`` and describes it (``"5x5 grid, walls 1,2 3,1
    3,3 0,4. you 0,0. goal 4 right 4 down"``). Each turn's first move word (``up``, ``down``, ``left``, ``right``)
    moves the agent one cell, and the reply says where the goal now lies (``"goal 3 right 4 down"``: a helpful
    host, so that a small LM need not track its position; the walls are only in the first message, and the
    optimum is the shortest path around them all the same). A wall or the edge leaves the agent in place
    (``"bump, goal 4 right 4 down"``), and a turn without a move word is a wasted move (``"say up, down, left or
    right. goal ..."``). Every turn costs ``MOVE_COST``; reaching the
    goal pays 1.0 and ends the episode (``terminated``); after ``max_turns`` turns the episode ends where the agent
    stands (``terminated`` too: the walk is over, nothing is cut short). ``info``: ``turns``, ``position``,
    ``success``.
    """

    def __init__(self, split: str = "train", max_turns: int = MAX_TURNS):
        self.split, self.max_turns, self.layouts = split, max_turns, layouts(split)
        self.layout: Layout | None = None
        self.position: Cell = (0, 0)
        self.turn = 0

    def reset(self, seed: int | None = None) -> tuple[str, dict[str, Any]]:
        index = random.randrange(len(self.layouts)) if seed is None else seed % len(self.layouts)
        self.layout, self.turn = self.layouts[index], 0
        self.position = self.layout.start
        return self.layout.describe(), {"optimal_return": optimal_return(self.layout)}

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self.layout is None:
            raise RuntimeError("step() before reset()")
        self.turn += 1
        move = next((word for word in action.lower().replace(",", " ").replace(".", " ").split() if word in MOVES), None)
        before = self.position
        if move is not None:
            self.position = neighbours(self.position, self.layout.walls)[move]
        success = self.position == self.layout.goal
        info = {"turns": self.turn, "position": self.position, "success": success}
        if success:
            return "goal", 1.0 - MOVE_COST, True, False, info
        way = way_to_goal(self.layout, self.position)
        if move is None:
            reply = f"say up, down, left or right. {way}"
        else:
            reply = f"bump, {way}" if self.position == before else way
        return reply, -MOVE_COST, self.turn >= self.max_turns, False, info


class GridWorldEnv(MultiTurnEnv):
    """
    ## Description

    Walk from a start cell to a goal on a 5x5 grid with 4 wall cells, one move word per turn, at the token level
    (:class:`lm_gym.MultiTurnEnv` over the :class:`GridWorld` text env). The first message describes the grid
    (``"5x5 grid, walls 1,2 3,1 3,3 0,4. you 0,0. goal 4 right 4 down"``); each reply says where the goal now
    lies (``"goal 3 right 4 down"``). The
    optimum of each instance is known: its breadth-first-search shortest path (:func:`optimal_return`; 0.80 on
    average over the 100 held-out layouts). The bundled LM (``scripts/build_grid_world_lm.py``) learned from a
    scripted walker that takes a shortest-path move 70% of the time and a random one otherwise, and starts at about
    0.33 of the optimum.

    ## Action Space

    ``Discrete(len(tokenizer))`` over the bundled word-level tokenizer (``up``, ``down``, ``left``, ``right``,
    digits, the grid's words, EOS, pad).

    ## Observation Space

    TextGen-v0's ``Dict`` of ``input_ids`` / ``attention_mask``, ``Box(shape=(224,), dtype=int64)``: the whole walk,
    e.g. ``"5x5 grid, walls ... goal 4 right 4 down\\nright<eos>\\ngoal 3 right 4 down\\ndown<eos>\\n..."``.

    ## Rewards

    ``-0.05`` for each turn (a move, a bump or a turn without a move word); ``+1`` on top on the turn that
    reaches the goal. Return of a shortest path of length d: ``1 - 0.05 d``.

    ## Starting State

    A layout of the split: ``split="train"`` (4,000 layouts) or ``"test"`` (100 others, held out); the text env's
    seed picks it (``reset(options={"text_env_seed": i})``: the split's i-th layout). Every layout's goal is 2 to 8
    moves from the start.

    ## Episode End

    Terminated at the goal or after 12 turns; an agent turn is one move word and EOS (2 tokens: the env ends a
    longer one and reads its first move word), so a whole episode fits 24 agent tokens and a 64-step rollout.

    ## Arguments

    ``gym.make("TextGen-GridWorld-v0", split="train", **multi_turn_env_kwargs)``.

    ## Version History

    * v0: Initial version (lm-gym 0.3).
    """

    def __init__(self, split: str = "train", **kwargs: Any):
        super().__init__(**{**grid_world_defaults(split), **kwargs})


def grid_world_defaults(split: str = "train") -> dict[str, Any]:
    """The ``MultiTurnEnv`` arguments that make ``TextGen-GridWorld-v0`` on ``split``."""
    return dict(text_env=functools.partial(GridWorld, split), model=str(GRID_WORLD_MODEL), max_tokens=224,
                max_turn_tokens=2, max_turns=MAX_TURNS, reply_template="\n{reply}\n")
