"""Modular arithmetic datasets `(a op b) mod p` with ordered or unordered train/test splits.

add and sub use all p^2 ordered pairs; mul and div use the non-zero residues (p prime), with
`a / b = a * b^(p-2) mod p`. An `unordered` split keeps (a, b) and (b, a) on the same side, which
matters for symmetric inputs `z = E[a] + E[b]` (docs/science.md 5, symmetric-pair leakage).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from twoclocks.data.tasks import Task, register

OPS = ("add", "sub", "mul", "div")
NON_COMMUTATIVE = ("sub", "div")


def is_prime(n: int) -> bool:
    """Trial division; moduli here are small."""
    if n < 2:
        return False
    return all(n % k for k in range(2, int(n**0.5) + 1))


def all_pairs(op: str, modulus: int) -> tuple[np.ndarray, np.ndarray]:
    """Every ordered input pair of the task and its label, in lexicographic order."""
    p = modulus
    lo = 1 if op in ("mul", "div") else 0
    r = np.arange(lo, p, dtype=np.int64)
    a, b = (g.ravel() for g in np.meshgrid(r, r, indexing="ij"))
    if op == "add":
        y = (a + b) % p
    elif op == "sub":
        y = (a - b) % p
    elif op == "mul":
        y = (a * b) % p
    elif op == "div":
        inv = np.array([pow(int(v), p - 2, p) for v in r], dtype=np.int64)
        y = (a * inv[b - lo]) % p
    else:
        raise ValueError(f"unknown op {op!r}; allowed: {', '.join(OPS)}")
    return np.stack([a, b], axis=1), y


def split_mask(x: np.ndarray, train_fraction: float, split: str, split_seed: int) -> np.ndarray:
    """Boolean train mask over pairs. `unordered` draws whole {a, b} groups."""
    rng = np.random.default_rng(split_seed)
    n = len(x)
    if split == "ordered":
        order = rng.permutation(n)
        mask = np.zeros(n, dtype=bool)
        mask[order[: round(train_fraction * n)]] = True
        return mask
    if split != "unordered":
        raise ValueError(f"unknown split {split!r}; allowed: ordered, unordered")
    key = np.minimum(x[:, 0], x[:, 1]) * (x.max() + 1) + np.maximum(x[:, 0], x[:, 1])
    groups, group_of = np.unique(key, return_inverse=True)
    chosen = rng.permutation(len(groups))[: round(train_fraction * len(groups))]
    in_train = np.zeros(len(groups), dtype=bool)
    in_train[chosen] = True
    return in_train[group_of]


def transpose_leak_fraction(x_train: np.ndarray, x_test: np.ndarray) -> float:
    """Fraction of off-diagonal test pairs (a, b) whose transpose (b, a) is in train."""
    width = int(max(x_train.max(initial=0), x_test.max(initial=0))) + 1
    train_keys = set((x_train[:, 0] * width + x_train[:, 1]).tolist())
    off = x_test[:, 0] != x_test[:, 1]
    if not off.any():
        return 0.0
    swapped = x_test[off, 1] * width + x_test[off, 0]
    return float(np.isin(swapped, list(train_keys)).mean())


def make_modular(
    op: str, modulus: int, train_fraction: float, split: str, split_seed: int
) -> xr.Dataset:
    """The dataset of design.md: int64 token pairs and labels, split into train and test."""
    if op in ("mul", "div") and not is_prime(modulus):
        raise ValueError(f"op {op!r} needs a prime modulus, got {modulus}")
    x, y = all_pairs(op, modulus)
    mask = split_mask(x, train_fraction, split, split_seed)
    x_train, y_train, x_test, y_test = x[mask], y[mask], x[~mask], y[~mask]
    return xr.Dataset(
        {
            "x_train": (("train", "feature"), x_train),
            "y_train": (("train",), y_train),
            "x_test": (("test", "feature"), x_test),
            "y_test": (("test",), y_test),
        },
        attrs={
            "task": "modular",
            "op": op,
            "modulus": int(modulus),
            "train_fraction": float(train_fraction),
            "achieved_train_fraction": float(mask.mean()),
            "split": split,
            "split_seed": int(split_seed),
            "num_classes": int(modulus),
            "vocab_size": int(modulus),
            "transpose_leak_fraction": transpose_leak_fraction(x_train, x_test),
        },
    )


def _format_fraction(v: float) -> str:
    return repr(float(v)) if isinstance(v, float) else str(v)


def modular_dataset_id(p: dict) -> str:
    """Readable dataset id of a modular cell, e.g. ``modular_add_p97_frac0.3_ordered_s0``."""
    return (
        f"modular_{p['op']}_p{p['modulus']}_frac{_format_fraction(p['train_fraction'])}"
        f"_{p['split']}_s{p['split_seed']}"
    )


def split_sizes(p: dict) -> tuple[int, int]:
    """(train, test) pair counts of a modular cell, without generating the data."""
    n = p["modulus"] ** 2 if p["op"] in ("add", "sub") else (p["modulus"] - 1) ** 2
    if p["split"] == "ordered":
        train = round(p["train_fraction"] * n)
        return train, n - train
    r = p["modulus"] if p["op"] in ("add", "sub") else p["modulus"] - 1
    groups = r * (r + 1) // 2
    chosen = round(p["train_fraction"] * groups)
    return (0, n) if chosen == 0 else ((n, 0) if chosen == groups else (chosen, n - chosen))


def check_modular(p: dict) -> list[str]:
    """What is wrong with a resolved modular cell, before any data is made (config errors)."""
    errors = []
    n_train, n_test = split_sizes(p)
    if min(n_train, n_test) == 0:
        side = "train" if n_train == 0 else "test"
        errors.append(
            f"train_fraction = {p['train_fraction']} of the {n_train + n_test} pairs of modulus "
            f"{p['modulus']} leaves the {side} split empty; use a larger modulus or a "
            f"train_fraction further from 0 and 1"
        )
    if p["op"] in ("mul", "div") and not is_prime(p["modulus"]):
        errors.append(
            f"op {p['op']!r} with modulus = {p['modulus']} is not allowed; "
            f"mul/div need a prime modulus (e.g. 97, 113)"
        )
    if p.get("combine") == "sum" and p["op"] in NON_COMMUTATIVE:
        errors.append(
            f"combine = 'sum' makes (a, b) and (b, a) the same input but op {p['op']!r} is not "
            f"commutative; use combine: concat"
        )
    # only the relu model logs the Fourier gap (its residue embedding)
    if p["model"] == "relu_embed" and p["fourier_keep"] > p["modulus"] // 2:
        errors.append(
            f"fourier_keep = {p['fourier_keep']} exceeds the {p['modulus'] // 2} distinct "
            f"frequencies of modulus {p['modulus']}"
        )
    return errors


TASK = register(
    Task(
        name="modular",
        config_keys=("op", "modulus", "train_fraction", "split", "split_seed"),
        input_kind="tokens",
        make=make_modular,
        dataset_id=modular_dataset_id,
        extra_keys=("fourier_keep",),
        check=check_modular,
    )
)
