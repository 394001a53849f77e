"""Verdicts robust to float32 numerics (issue 26 item 2).

With ``analysis.numerics_replicate`` on, every train group is trained a second time under a
second CPU code path (torch's portable kernels, ``ATEN_CPU_CAPABILITY=default``) into
``results/<study>/replicate/``; its clocks, fits and measures are extracted the same way and the
claims judged on both. Two runs that differ only in the last bits of float32 rounding can still
reach other verdicts when the dynamics amplify those bits (loss spikes near the float32 floor).
A verdict that differs between the two is INCONCLUSIVE with that reason, both evidences kept;
every claim records the replicate's verdict. The primary study is never written to.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twoclocks.analyze.claims.spec import INCONCLUSIVE
from twoclocks.analyze.replicate import (  # re-exported: the workflow side
    CAPABILITY_ENV,
    REPLICATE_CAPABILITY,
    check_replicate_config,
    check_second_code_path,
    replicate_enabled,
    replicate_files,
)

FLIP_REASON = (
    "flips under a second CPU code path: {here} here, {there} there; "
    "the dynamics amplify float32 rounding"
)
NOT_JUDGED = "not judged on the replicate (its inputs exist for the primary study only)"


def capability_of(datasets: list[tuple[str, dict, Any]]) -> str:
    """The CPU capability (or capabilities, joined) recorded in the provenance of the stores
    of `datasets` (`results.cell_datasets` items); "unknown" where none says."""
    from twoclocks.analyze.results import parse_json

    found = set()
    for _cid, _params, ds in datasets:
        prov = parse_json(ds.attrs.get("provenance"), {}) or {}
        cap = (prov.get("numerics") or {}).get("cpu_capability")
        found.add(str(cap) if cap else "unknown")
    return "+".join(sorted(found)) or "unknown"


def _side(rec: Mapping[str, Any] | None, capability: str) -> dict:
    if rec is None:
        return {"verdict": None, "evidence": NOT_JUDGED, "cpu_capability": capability}
    return {"verdict": rec["verdict"], "evidence": rec["evidence"], "cpu_capability": capability}


def merge_replicate(
    primary: list[dict], replicate: list[dict], here: str, there: str
) -> list[dict]:
    """The primary claim records with the replicate's verdict recorded in each (`replicate`);
    a claim whose verdict differs becomes INCONCLUSIVE, its reason the flip, its evidence both
    evidences, and `flip` holds both sides ({verdict, evidence, cpu_capability}).

    `here` / `there`: the CPU capabilities of the primary and the replicate. A claim the
    replicate did not judge (e.g. relu_reduction: the reduce stage runs on the primary only)
    keeps its verdict. Inputs are not modified.
    """
    by_id = {r["id"]: r for r in replicate}
    out = []
    for rec in primary:
        other = by_id.get(rec["id"])
        new = {**rec, "replicate": _side(other, there)}
        if other is not None and other["verdict"] != rec["verdict"]:
            reason = FLIP_REASON.format(here=rec["verdict"], there=other["verdict"])
            new.update(
                verdict=INCONCLUSIVE,
                reason=reason,
                evidence=f"{reason}. Here ({here}): {rec['evidence']} "
                f"There ({there}): {other['evidence']}",
                flip={"here": _side(rec, here), "there": _side(other, there)},
            )
        out.append(new)
    return out


def replicate_summary(claims: list[dict], here: str, there: str) -> dict:
    """claims.json's `numerics_replicate` record: both code paths and the flipped claims.
    `perturbed` is False when both ran the same capability (then the replicate tested
    nothing: the machine's native path is already the portable one)."""
    return {
        "perturbation": f"{CAPABILITY_ENV}={REPLICATE_CAPABILITY} in the replicate's train jobs",
        "cpu_capability": {"primary": here, "replicate": there},
        "perturbed": here != there,
        "flipped": [c["id"] for c in claims if "flip" in c],
    }


__all__ = [
    "CAPABILITY_ENV", "FLIP_REASON", "NOT_JUDGED", "REPLICATE_CAPABILITY", "capability_of",
    "check_replicate_config", "check_second_code_path", "merge_replicate", "replicate_enabled",
    "replicate_files", "replicate_summary",
]  # fmt: skip
