"""A linearly separable teacher task: Gaussian inputs, labels `argmax(W* x)` with rank-r W*.

Separable by construction, so the post-margin regime of the deep-linear theory is reachable and
the end-to-end map should simplify towards rank r (docs/science.md 6).

Sparse observation (``observed_features = k``, default None = every feature, today's task): the
teacher reads only the first k features and the train inputs carry only those (the others are
0, unobserved), while the test inputs carry all d. The input directions no train input spans
are then exactly features k..d-1: a map that fits the train set and has no energy there
generalises perfectly (k = 1), and whatever energy the init left there is pure noise on the
test set until weight decay removes it (issue 23 item 5, a deep linear net that groks).
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
    observed_features: int | None = None,
) -> xr.Dataset:
    """Draw W* = U V^T (U: classes x r, V: d x r, Gaussian) and labelled Gaussian inputs.

    `observed_features` k: V's rows k.. and the train inputs' features k.. set to 0 after the
    same draws (so the default draws exactly what it drew before the option existed)."""
    rng = np.random.default_rng(data_seed)
    u = rng.standard_normal((num_classes, teacher_rank))
    v = rng.standard_normal((input_dim, teacher_rank))
    if observed_features is not None:
        v[observed_features:] = 0.0
    teacher = u @ v.T / np.sqrt(input_dim)
    x = rng.standard_normal((train_size + test_size, input_dim))
    y = np.argmax(x @ teacher.T, axis=1).astype(np.int64)
    if observed_features is not None:
        x[:train_size, observed_features:] = 0.0
    attrs = {} if observed_features is None else {"observed_features": int(observed_features)}
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
            **attrs,
        },
    )


def teacher_dataset_id(p: dict) -> str:
    """Readable dataset id of a resolved teacher cell, e.g. ``teacher_d20_c5_r2_n200-200_s0``."""
    observed = p.get("observed_features")
    return (
        f"teacher_d{p['input_dim']}_c{p['num_classes']}_r{p['teacher_rank']}"
        f"_n{p['train_size']}-{p['test_size']}_s{p['data_seed']}"
        + ("" if observed is None else f"_o{observed}")
    )


def check_teacher(p: dict) -> list[str]:
    """What is wrong with a resolved teacher cell, before any data is made (config errors)."""
    if p["teacher_rank"] > min(p["input_dim"], p["num_classes"]):
        return [
            f"teacher_rank = {p['teacher_rank']} exceeds "
            f"min(input_dim, num_classes) = {min(p['input_dim'], p['num_classes'])}"
        ]
    observed = p.get("observed_features")
    if observed is not None and not p["teacher_rank"] <= observed <= p["input_dim"]:
        return [
            f"observed_features = {observed} must lie in [teacher_rank, input_dim] = "
            f"[{p['teacher_rank']}, {p['input_dim']}]"
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
            "observed_features",
        ),
        input_kind="dense",
        make=make_teacher,
        dataset_id=teacher_dataset_id,
        check=check_teacher,
    )
)
