"""The two clocks separate (Fig. 1) and larger weight decay groks earlier (Fig. 1, Fig. 3)."""

from __future__ import annotations

import numpy as np
from scipy import stats

from twoclocks.analyze.claims.common import combine, gen_levels, gen_rule
from twoclocks.analyze.claims.spec import FAIL, INCONCLUSIVE, PASS, ClaimSpec, Context, Scope
from twoclocks.analyze.results import clock_times, pick_level, separation_ratios

RELU = Scope("ReLU cells (relu_embed), any optimiser: the paper's experiment", ("relu_embed",))


def judge_separation(ctx: Context, s: dict) -> dict:
    relu = set(ctx.scope_ids)
    parts, details = [], {}
    for gclock, glevel in gen_levels(s):
        df = separation_ratios(ctx.clocks, gclock, s["cls_eps"], glevel)
        df = df[df["cell_id"].isin(relu)] if relu else df
        if df.empty or df["cls_level"].isna().all() or df["slow_level"].isna().all():
            parts.append((gclock, INCONCLUSIVE, "no cls/gen clocks for ReLU cells"))
            continue
        ok = df["ratio"].notna()
        n_cls_cens = int(df["cls_censored"].fillna(True).astype(bool).sum())
        n_gen_cens = int(df["slow_censored"].fillna(True).astype(bool).sum())
        n_relapsed = int(df["relapsed"].sum())
        head = f"eps={df['cls_level'].iloc[0]:.0e}, {gclock}@{df['slow_level'].iloc[0]:g}: "
        cens = f"censored: {n_cls_cens} cls, {n_gen_cens} gen; relapsed (out): {n_relapsed}"
        if ok.sum() < s["min_runs"]:
            why = f"{int(ok.sum())} runs with both clocks ({cens})"
            parts.append((gclock, INCONCLUSIVE, head + why))
            continue
        per_cell = df[ok].groupby("cell_id")["ratio"].median()
        med = float(np.median(per_cell))
        verdict = PASS if med > s["separation_min_ratio"] else FAIL
        ev = (
            f"{head}median over cells of median R = T_gen/T_cls = {med:.3g} (range "
            f"{per_cell.min():.3g}-{per_cell.max():.3g}, {int(ok.sum())} runs; {cens})"
        )
        parts.append((gclock, verdict, ev))
        details[gclock] = {k: float(v) for k, v in per_cell.items()}
    verdict, ev = combine(parts)
    per_cell = details.get("gen_acc", details.get("gen_loss", {}))
    return ctx.record(verdict, ev, per_cell=per_cell, per_clock=details)


def judge_weight_decay(ctx: Context, s: dict) -> dict:
    cells = ctx.cells
    if "weight_decay" not in cells:
        return ctx.record(INCONCLUSIVE, "weight decay is not a grid axis")
    parts, rho_by, t_by = [], {}, {}
    for gclock, target in gen_levels(s):
        glevel = pick_level(ctx.clocks, gclock, target, log=gclock != "gen_acc")
        verdict, ev, rhos, pairs = _wd_rank(ctx, s, gclock, glevel)
        parts.append((gclock, verdict, ev))
        if rhos:
            rho_by[gclock], t_by[gclock] = rhos, pairs
    verdict, ev = combine(parts)
    first = next(iter(rho_by), None)
    return ctx.record(
        verdict,
        ev,
        rho=rho_by.get(first, []),
        t_gen=t_by.get(first, {}),
        per_clock={c: {"rho": rho_by[c], "t_gen": t_by[c]} for c in rho_by},
    )


def _wd_rank(ctx: Context, s: dict, gclock: str, glevel: float | None):
    """Spearman rho(weight decay, median T_gen) per group of cells that differ only in weight
    decay, for one generalisation clock: (verdict, evidence, rhos, cell -> T_gen)."""
    relu = ctx.cells[ctx.cells["cell_id"].astype(str).isin(ctx.scope_ids)]
    t = clock_times(ctx.clocks, gclock, glevel)
    if t.empty:
        return INCONCLUSIVE, f"no {gclock} clock", [], {}
    t["step"] = t["step"].fillna(np.inf)  # never grokked = latest
    t.loc[t["relapse"].astype(bool), "step"] = np.inf  # a relapsed run never counts as grokked
    med = t.groupby("cell_id")["step"].median().rename("t_gen").reset_index()
    df = relu.merge(med, on="cell_id")
    other = [
        c
        for c in df.columns
        if c not in {"cell_id", "label", "weight_decay", "t_gen", "model"}
        and df[c].astype(str).nunique() > 1
    ]
    rhos, n_used, pairs = [], 0, {}
    for _, g in df.groupby(other, sort=True) if other else [(None, df)]:
        g = g[np.isfinite(g["t_gen"]) | (g["t_gen"] == np.inf)]
        if g["weight_decay"].nunique() < s["wd_min_cells"] or not np.isfinite(g["t_gen"]).any():
            continue
        if g["t_gen"].nunique() < 2:
            rho = 0.0  # T_gen does not depend on weight decay at all
        else:
            rho = stats.spearmanr(g["weight_decay"], g["t_gen"]).statistic
        if np.isfinite(rho):
            rhos.append(float(rho))
            n_used += len(g)
            pairs.update({str(r.cell_id): float(r.t_gen) for r in g.itertuples()})
    if not rhos:
        why = f"fewer than {s['wd_min_cells']} weight decays with a grokked cell"
        return INCONCLUSIVE, why, [], {}
    rho = float(np.mean(rhos))
    verdict = PASS if rho <= s["wd_rho_max"] else FAIL if rho > 0 else INCONCLUSIVE
    ev = (
        f"Spearman rho(weight decay, median {gclock}@{glevel:g}) = {rho:.3g} over {n_used} "
        f"cells ({len(rhos)} group(s)); PASS if <= {s['wd_rho_max']}, FAIL if > 0"
    )
    return verdict, ev, rhos, pairs


SPECS = (
    ClaimSpec(
        id="separation",
        statement="Train CE reaches ~1e-6 long before the test loss drops (T_gen / T_cls > 2).",
        section="Sec. 1 and Fig. 1 (train loss ~1e-6 by ~1.5k steps, test loss drops at 4-8.5k)",
        scope=RELU,
        inputs=("cells", "clocks"),
        thresholds=(
            "cls_eps",
            "gen_acc_level",
            "gen_loss_level",
            "separation_min_ratio",
            "min_runs",
        ),  # fmt: skip
        rule=lambda s: (
            f"PASS if the median over cells of R = T_gen / T_cls(eps={s['cls_eps']:g}) (median "
            f"per cell, relapsed runs out) > {s['separation_min_ratio']:g} ({gen_rule(s)})"
        ),
        judge=judge_separation,
        order=10,
    ),
    ClaimSpec(
        id="wd_earlier",
        statement="Larger weight decay groks earlier (T_gen decreases with weight decay).",
        section="Fig. 1 and Fig. 3 (test loss drops earlier for larger lambda)",
        scope=RELU,
        inputs=("cells", "clocks"),
        thresholds=("gen_acc_level", "gen_loss_level", "wd_rho_max", "wd_min_cells"),
        rule=lambda s: (
            f"Spearman rho(weight decay, T_gen) <= {s['wd_rho_max']:g}: PASS, > 0: "
            f"FAIL; needs >= {s['wd_min_cells']} weight decays with a grokked cell ({gen_rule(s)})"
        ),
        judge=judge_weight_decay,
        order=20,
    ),
)
