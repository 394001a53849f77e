"""The task registry: one module per task (``modular``, ``teacher``), registered by its config name.

A task owns the cell keys that determine its dataset, the kind of inputs it produces (integer
``tokens`` or ``dense`` feature vectors), its generator and the readable dataset id. Everything
else reaches a task through :func:`task`, whose error lists the valid names. Adding a task is one
new module that builds a :class:`Task` and calls :func:`register` (docs/design.md, "Extending
twoclocks"), plus its name in the schema's ``task`` enum and its keys in the schema's cell.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import xarray as xr

__all__ = ["TASKS", "Task", "register", "task"]


@dataclass(frozen=True)
class Task:
    """What the rest of the pipeline needs to know about one task.

    ``config_keys`` are the cell keys passed to ``make`` (in this order; they also form the
    dataset's cache identity), ``extra_keys`` cell keys that apply only to this task but not to
    its data (e.g. the Fourier gap's ``fourier_keep``), ``input_kind`` ``"tokens"`` (x holds
    integer token pairs, the dataset has a ``vocab_size`` attr) or ``"dense"`` (x holds feature
    vectors), ``dataset_id`` a readable unique name for the dataset of a resolved cell,
    ``check`` the problems of a resolved cell (messages without the cell id; config errors).
    """

    name: str
    config_keys: tuple[str, ...]
    input_kind: str
    make: Callable[..., xr.Dataset]
    dataset_id: Callable[[dict], str]
    extra_keys: tuple[str, ...] = ()
    check: Callable[[dict], list[str]] = lambda p: []

    def __post_init__(self):
        if self.input_kind not in ("tokens", "dense"):
            raise ValueError(
                f"task {self.name!r}: input_kind must be 'tokens' or 'dense', "
                f"got {self.input_kind!r}"
            )


TASKS: dict[str, Task] = {}


def register(t: Task) -> Task:
    """Add a task to the registry under its name; returns it."""
    TASKS[t.name] = t
    return t


def task(name: str) -> Task:
    """The registered task called ``name``; a ValueError lists the valid names."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(
            f"unknown task {name!r}; registered tasks: {', '.join(sorted(TASKS))}"
        ) from None


# The built-in tasks register themselves on import (after the registry exists).
from twoclocks.data import modular, teacher  # noqa: E402, F401
