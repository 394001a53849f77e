"""Fourier structure of the embedding and head (the paper's Fig. 2): residue-ordered heatmaps
and per-frequency spectra of the first and last checkpoint."""

from __future__ import annotations

from typing import Any

import altair as alt
import numpy as np
import pandas as pd
import xarray as xr

from twoclocks.report.figures.common import HEATMAP_COLUMNS, MAX_ROWS, WIDTH, FigureSkipped, cl
from twoclocks.report.figures.registry import figure


def primitive_root(p: int) -> int:
    """Smallest generator of the multiplicative group of Z/p (p prime)."""
    factors = {q for q in range(2, p) if (p - 1) % q == 0 and all(q % r for r in range(2, q))}
    for g in range(2, p):
        if all(pow(g, (p - 1) // q, p) != 1 for q in factors):
            return g
    return 1


def generator_order(p: int) -> np.ndarray:
    """Residues g^0, g^1, ..., g^(p-2) mod p for the smallest generator g (Fig. 2 ordering)."""
    g = primitive_root(p)
    return np.array([pow(g, i, p) for i in range(p - 1)])


def additive_order(rows: np.ndarray, p: int) -> tuple[np.ndarray, int, int]:
    """Residues i * g mod p (i = 0..p-1) with g = k^-1 mod p for the dominant non-zero
    frequency k of `rows` (p, n): the additive generator g turns the key Fourier mode into one
    smooth cycle down the rows. Returns (order, g, k)."""
    energy = fourier_spectrum(rows, "add")
    k = int(np.argmax(energy[1:]) + 1)
    g = pow(k, p - 2, p)
    return (np.arange(p) * g) % p, g, k


def _pick_cell(study: Any, cell: str | None, var: str) -> tuple[str, dict, xr.Dataset]:
    cells = [c for c in cl.cell_datasets(study) if var in c[2] and c[1].get("modulus")]
    if cell is not None:
        cells = [c for c in cells if c[0] == cell]
    if not cells:
        raise FigureSkipped(f"no modular cell with {var} snapshots")
    return cells[-1]  # cells are sorted: the last has the largest weight decay in a wd grid


def _residue_rows(snap: np.ndarray, p: int) -> np.ndarray:
    """Orient a snapshot (row, col) so rows are residues 0..p-1 (rows or columns of size >= p)."""
    return snap[:p] if snap.shape[0] >= p else snap.T[:p]


def key_frequency_phases(
    rows: np.ndarray, op: str, keep: int
) -> tuple[np.ndarray, list[dict[str, np.ndarray | int]]]:
    """The spectrum of (p, n) residue rows (`metrics.fourier_energy` on the rows as logged,
    mul/div in discrete-log order, as the logged `fourier_gap` sees them) and, per key frequency
    (the `keep` largest k >= 1, the frequencies `fourier_gap` keeps), the unit directions in
    feature space of its cos and sin parts and the residue order by phase k * i mod m.

    For a Fourier-structured matrix, the centred rows projected on the cos (sin) direction and
    read in that order trace one cosine (sine) cycle; for noise they do not.
    """
    import torch

    from twoclocks.train.metrics import fourier_energy

    rows = np.asarray(rows, float)
    residues = generator_order(rows.shape[0]) if op in {"mul", "div"} else np.arange(len(rows))
    x = rows[residues]
    m = len(x)
    energy = fourier_energy(torch.as_tensor(x)[None])[0].numpy()
    keys = np.argsort(energy[1:])[::-1][: min(keep, len(energy) - 1)] + 1
    coef = np.fft.rfft(x - x.mean(axis=0), axis=0)  # (m // 2 + 1, n)
    out = []
    for k in keys:
        dirs = []
        for part in (coef[k].real, -coef[k].imag):
            norm = np.linalg.norm(part)
            dirs.append(part / norm if norm > 0 else part)
        order = np.argsort((int(k) * np.arange(m)) % m, kind="stable")
        out.append({"k": int(k), "cos": dirs[0], "sin": dirs[1], "order": order})
    return energy, [dict(d, residues=residues) for d in out]


def _key_keep(params: dict, ds: xr.Dataset, claim_settings: dict | None) -> tuple[int, str]:
    """How many key frequencies the fourier claim's gap keeps, and where the number comes
    from: the model's `fourier_keep` when the store logs `fourier_gap` (the claim reads it),
    else the claims' `fourier_keep` (the replay stage's snapshot gap)."""
    from twoclocks.analyze.claims.spec import resolve_claim_settings

    if "fourier_gap" in ds:
        return int(params.get("fourier_keep", 8)), "logged fourier_gap"
    return int(resolve_claim_settings(claim_settings)["fourier_keep"]), "snapshot gap"


def _phase_frame(snaps: np.ndarray, steps: Any, p: int, keys: list[dict]) -> pd.DataFrame:
    """Rows of the first and last snapshot, centred, in phase order of each key frequency and
    projected on its cos/sin directions: one row per (checkpoint, key part, phase)."""
    frames = []
    for when, snap, step in (("first", snaps[0], steps[0]), ("last", snaps[-1], steps[-1])):
        x = _residue_rows(snap, p)
        for key in keys:
            xr_ = x[key["residues"]]
            xr_ = (xr_ - xr_.mean(axis=0))[key["order"]]
            for part in ("cos", "sin"):
                frames.append(
                    pd.DataFrame(
                        {
                            "checkpoint": f"{when} (step {int(step)})",
                            "column": f"{key['k']} {part}",
                            "phase": np.arange(len(xr_)),
                            "residue": key["residues"][key["order"]],
                            "w": xr_ @ key[part],
                        }
                    )
                )
    return pd.concat(frames, ignore_index=True)


# two figures from one function: fig2_embedding registers first (decorators apply bottom-up)
@figure("fig2_head", "Class rows of the head U, shown as the embedding E is.", block="U")
@figure(
    "fig2_embedding",
    "E rows (one seed, first and last checkpoint) on the cos/sin directions of each key frequency "
    "k, in phase order k * residue mod p; right: energy per frequency k (last checkpoint).",
    block="E",
)
def fig_key_frequencies(
    study: Any,
    block: str = "E",
    cell: str | None = None,
    seed_index: int = 0,
    claim_settings: dict | None = None,
) -> alt.HConcatChart:
    """Fig. 2: per key frequency of the final matrix, its rows ordered by phase and projected
    on that frequency's cos/sin directions (first and last checkpoint), and the spectrum."""
    var = f"snap_{block}"
    cid, params, ds = _pick_cell(study, cell, var)
    p, op = int(params["modulus"]), str(params.get("op", "add"))
    keep, source = _key_keep(params, ds, claim_settings)
    snaps = ds[var].isel(seed=seed_index).to_numpy()
    last = _residue_rows(snaps[-1], p)
    energy, keys = key_frequency_phases(last, op, keep)
    steps = ds["checkpoint_step"].to_numpy() if "checkpoint_step" in ds else [0, -1]
    df = _phase_frame(snaps, steps, p, keys)
    # each checkpoint on its own scale (init rows are larger than trained ones)
    scale = df.groupby("checkpoint")["w"].transform(lambda w: float(w.abs().max()) or 1.0)
    df["w_rel"] = df["w"] / scale
    heat = (
        alt.Chart(df)
        .mark_rect()
        .encode(
            x=alt.X("column:N", sort=list(dict.fromkeys(df["column"])), title="key frequency k"),
            y=alt.Y("phase:O", title="rows by phase k * i mod m", axis=alt.Axis(labels=False)),
            color=alt.Color(
                "w_rel:Q",
                scale=alt.Scale(scheme="redblue", domain=[-1, 1], reverse=True),
                legend=alt.Legend(title=["projection", "/ max |.|"], format=".1f"),
            ),
            column=alt.Column("checkpoint:N", title=None),
            tooltip=["residue:Q", "column:N", alt.Tooltip("w:Q", format=".3f")],
        )
        .properties(width=min(128, 8 * len(keys) * 2), height=max(60, min(140, 3 * len(last))))
    )
    key_set = {k["k"] for k in keys}
    total = float(energy.sum()) or 1.0
    gap = 1.0 - sum(energy[k] for k in key_set) / total
    spec = pd.DataFrame(
        {
            "k": np.arange(energy.size),
            "energy": energy / total,
            "kind": ["key" if k in key_set else "outside" for k in range(energy.size)],
        }
    )
    bars = (
        alt.Chart(spec)
        .mark_bar()
        .encode(
            x=alt.X("k:O", title=f"k (keys: {source})", axis=alt.Axis(labelOverlap="parity")),
            y=alt.Y("energy:Q", title="energy fraction (last checkpoint)"),
            color=alt.Color("kind:N", legend=None, sort=["key", "outside"]),
            tooltip=["k:O", "kind:N", alt.Tooltip("energy:Q", format=".3f")],
        )
        .properties(
            width=160,
            height=80,
            title=f"{len(keys)} key, energy outside {gap:.2g}",
        )
    )
    order = ", discrete-log order" if op in {"mul", "div"} else ""
    title = f"{block} by key-frequency phase{order}, {cid}, seed "
    return alt.hconcat(heat, bars).properties(title=title + str(int(ds["seed"][seed_index])))


def fig_generator_heatmap(
    study: Any, block: str = "E", cell: str | None = None, seed_index: int = 0
) -> alt.HConcatChart:
    """Fig. 2: rows of E (or class rows of U) re-ordered by a generator of Z/p, first vs last
    checkpoint. add/sub: the additive generator g = k^-1 of the dominant frequency k (rows
    i * g mod p); mul/div: the multiplicative generator (rows g^i mod p).

    Columns are the top HEATMAP_COLUMNS principal directions of the final matrix.
    """
    var = f"snap_{block}"
    cid, params, ds = _pick_cell(study, cell, var)
    p = int(params["modulus"])
    snaps = ds[var].isel(seed=seed_index).to_numpy()
    first, last = _residue_rows(snaps[0], p), _residue_rows(snaps[-1], p)
    if params.get("op", "add") in ("add", "sub"):
        order, g, k = additive_order(last, p)
        how, ylab = f"i*g mod {p} (g = {g} = k^-1, key frequency k = {k})", "residue i*g mod p"
    else:
        order, g = generator_order(p), primitive_root(p)
        how, ylab = f"g^i mod {p} (g = {g})", "residue g^i mod p"
    n_rows = len(order)
    n_cols = min(HEATMAP_COLUMNS, last.shape[1], max(1, MAX_ROWS // (2 * n_rows)))
    # Columns: the final matrix's principal directions (both panels in that basis); each carries
    # one Fourier mode after grokking, so the key mode shows as a smooth cycle down the rows.
    basis = np.linalg.svd(last - last.mean(0), full_matrices=False)[2][:n_cols].T
    n_cols = basis.shape[1]
    cols = np.arange(n_cols)
    steps = ds["checkpoint_step"].to_numpy() if "checkpoint_step" in ds else [0, -1]
    panels = []
    for snap, step in ((first, steps[0]), (last, steps[-1])):
        m = (snap @ basis)[order]
        i, j = np.meshgrid(np.arange(n_rows), np.arange(n_cols), indexing="ij")
        df = pd.DataFrame(
            {"i": i.ravel(), "residue": order[i.ravel()], "col": cols[j.ravel()], "w": m.ravel()}
        )
        vmax = float(np.abs(m).max()) or 1.0
        panels.append(
            alt.Chart(df)
            .mark_rect()
            .encode(
                x=alt.X("col:O", title=f"principal direction of final {block}"),
                y=alt.Y(
                    "residue:O",
                    sort=order.tolist(),
                    title=ylab,
                    axis=alt.Axis(labelOverlap="parity"),
                ),
                color=alt.Color(
                    "w:Q",
                    scale=alt.Scale(scheme="redblue", domain=[-vmax, vmax], reverse=True),
                    legend=alt.Legend(title=["projection", f"(step {int(step)})"], format=".2g"),
                ),
                tooltip=["residue:Q", "col:Q", alt.Tooltip("w:Q", format=".3f")],
            )
            .properties(title=f"step {int(step)}", width=150, height=min(260, 12 * n_rows))
        )
    return (
        alt.hconcat(*panels)
        .resolve_scale(color="independent")
        .properties(
            title=f"{block} rows by residue {how}, {cid}, seed {int(ds['seed'][seed_index])}"
        )
    )


def fourier_spectrum(rows: np.ndarray, op: str = "add") -> np.ndarray:
    """Energy per frequency k = 0..p//2 of a (p, n) matrix over residues, summed over columns:
    ``metrics.fourier_energy`` (the helper the logged Fourier gap uses) of the centred rows.

    Additive tasks use the natural residue order; multiplicative ones (mul/div) the discrete-log
    order given by the generator (row 0 dropped), where their Fourier structure lives.
    """
    import torch

    from twoclocks.train.metrics import fourier_energy

    rows = np.asarray(rows, float)
    if op in {"mul", "div"}:
        rows = rows[generator_order(rows.shape[0])]
    centred = torch.as_tensor(rows - rows.mean(axis=0))
    return fourier_energy(centred[None])[0].numpy()


@figure(
    "fig2_spectra",
    "Fraction of the row energy of E and U per Fourier frequency k, first vs last checkpoint.",
)
def fig_fourier_spectra(study: Any, cell: str | None = None, seed_index: int = 0) -> alt.Chart:
    """Fig. 2 (spectra): normalised Fourier energy of E and U rows, first vs last checkpoint."""
    cid, params, ds = _pick_cell(study, cell, "snap_E")
    p, op = int(params["modulus"]), str(params.get("op", "add"))
    frames = []
    for block in ("E", "U"):
        var = f"snap_{block}"
        if var not in ds:
            continue
        snaps = ds[var].isel(seed=seed_index).to_numpy()
        for when, snap in (("first checkpoint", snaps[0]), ("last checkpoint", snaps[-1])):
            spec = fourier_spectrum(_residue_rows(snap, p), op)
            frames.append(
                pd.DataFrame(
                    {
                        "block": block,
                        "when": when,
                        "k": np.arange(spec.size),
                        "energy": spec / (spec.sum() or 1.0),
                    }
                )
            )
    df = pd.concat(frames, ignore_index=True)
    return (
        alt.Chart(df)
        .mark_bar()
        .encode(
            x=alt.X("k:O", title="frequency k"),
            y=alt.Y("energy:Q", title="energy fraction"),
            color=alt.Color("when:N", title=None),
            xOffset="when:N",
            row=alt.Row("block:N", title=None),
        )
        .properties(width=WIDTH, height=140, title=f"Fourier spectra of E and U rows, {cid}")
    )
