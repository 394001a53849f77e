"""A linearly separable teacher task: Gaussian inputs, labels `argmax(W* x)` with rank-r W*.

Separable by construction, so the post-margin regime of the deep-linear theory is reachable and
the end-to-end map should simplify towards rank r (docs/science.md 6).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from twoclocks.data.tasks import Task, register


def make_teacher(
    input_dim: int,
    num_classes: int,
    teacher_rank: int,
    train_size: int,
    test_size: int,
    data_seed: int,
) -> xr.Dataset:
    """Draw W* = U V^T (U: classes x r, V: d x r, Gaussian) and labelled Gaussian inputs."""
    rng = np.random.default_rng(data_seed)
    u = rng.standard_normal((num_classes, teacher_rank))
    v = rng.standard_normal((input_dim, teacher_rank))
    teacher = u @ v.T / np.sqrt(input_dim)
    x = rng.standard_normal((train_size + test_size, input_dim))
    y = np.argmax(x @ teacher.T, axis=1).astype(np.int64)
    return xr.Dataset(
        {
            "x_train": (("train", "feature"), x[:train_size]),
            "y_train": (("train",), y[:train_size]),
            "x_test": (("test", "feature"), x[train_size:]),
            "y_test": (("test",), y[train_size:]),
            "teacher": (("class", "feature"), teacher),
        },
        attrs={
            "task": "teacher",
            "input_dim": int(input_dim),
            "num_classes": int(num_classes),
            "teacher_rank": int(teacher_rank),
            "train_size": int(train_size),
            "test_size": int(test_size),
            "data_seed": int(data_seed),
            "classes_present_train": int(np.unique(y[:train_size]).size),
        },
    )


def teacher_dataset_id(p: dict) -> str:
    """Readable dataset id of a resolved teacher cell, e.g. ``teacher_d20_c5_r2_n200-200_s0``."""
    return (
        f"teacher_d{p['input_dim']}_c{p['num_classes']}_r{p['teacher_rank']}"
        f"_n{p['train_size']}-{p['test_size']}_s{p['data_seed']}"
    )


def check_teacher(p: dict) -> list[str]:
    """What is wrong with a resolved teacher cell, before any data is made (config errors)."""
    if p["teacher_rank"] > min(p["input_dim"], p["num_classes"]):
        return [
            f"teacher_rank = {p['teacher_rank']} exceeds "
            f"min(input_dim, num_classes) = {min(p['input_dim'], p['num_classes'])}"
        ]
    return []


TASK = register(
    Task(
        name="teacher",
        config_keys=(
            "input_dim",
            "num_classes",
            "teacher_rank",
            "train_size",
            "test_size",
            "data_seed",
        ),
        input_kind="dense",
        make=make_teacher,
        dataset_id=teacher_dataset_id,
        check=check_teacher,
    )
)
