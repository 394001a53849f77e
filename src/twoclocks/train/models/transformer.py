"""``transformer``: the decoder-only transformer of the modular-arithmetic grokking literature.

Input ``a b =`` (sequence length 3; vocabulary the ``p`` residues plus ``=``, token ``p``),
learned token and position embeddings, ``n_layers`` blocks of causal multi-head attention
(``n_heads`` heads of ``d_model / n_heads``, no attention biases) and an MLP (``d_mlp`` units,
ReLU or GELU, biases), each added to the residual stream, optional pre-LayerNorms (default off,
as in Nanda et al. 2023, "Progress measures for grokking via mechanistic interpretability"), and
an unembedding read at the last position (no bias).

Blocks (design.md order): ``E`` (p+1, d), ``P`` (3, d), per layer ``l``: ``Q{l} K{l} V{l}``
(d, d; the heads' rows stacked), ``O{l}`` (d, d), ``Win{l}`` (d_mlp, d), ``bin{l}`` (d_mlp),
``Wout{l}`` (d, d_mlp), ``bout{l}`` (d); with ``layernorm``, ``ln1w{l} ln1b{l} ln2w{l} ln2b{l}``
and ``lnfw lnfb``; then ``U`` (p, d). Init as Nanda et al.: N(0, 1/d) for every matrix but
``U`` (N(0, 1/p)), zero biases, unit LayerNorm gains; times ``init_scale``.

Logged matrices (the ``srank`` axis): ``E`` (residue rows), ``U``, per layer the QK map
``QK{l} = Q^T K`` and the OV map ``OV{l} = O V`` (sums over the heads of each head's
``W_Q^h^T W_K^h`` and ``W_O^h W_V^h``: the whole layer's bilinear score form and value path),
``Win{l}``, ``Wout{l}``, and the end-to-end map ``UE = U E_res^T`` (p x p): the *direct path*
from a residue token's embedding to the logits, skipping attention and MLP. Its stable-rank gap
(`rep_srank`) therefore reads how low-rank the embedding-to-logit shortcut becomes; it is not a
product of all the layers, since attention is not linear in the input. A study that wants the
stable rank of another map names it with ``analysis.srank_matrix`` (e.g. ``OV1``). The Fourier
gap reads the residue rows of ``E``.

Every weight product of the stacked forward is a per-member matmul on the CPU
(``member_linear``) and the token gather an ``index_select``, so a member trained in a stack
follows the bits of the member alone. The last layer computes queries, output map and MLP at the
last position only (the logits read nothing else).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from twoclocks.config import cell_default
from twoclocks.train.models.base import Forward, ModelSpec, member_linear

__all__ = ["TransformerNet", "TransformerSpec"]

SEQ_LEN = 3  # a, b, =
LN_EPS = 1e-5


def _act(name: str, a: Tensor) -> Tensor:
    return torch.relu(a) if name == "relu" else F.gelu(a)


def _layer_norm(x: Tensor, w: Tensor | None, b: Tensor | None) -> Tensor:
    """LayerNorm over the last axis with per-member gain/bias ``(M, d)`` (None: no LayerNorm).
    ``x`` is ``(M, ..., d)``."""
    if w is None:
        return x
    shape = (w.shape[0],) + (1,) * (x.ndim - 2) + (w.shape[1],)
    y = F.layer_norm(x, (x.shape[-1],), eps=LN_EPS)
    return y * w.view(shape) + b.view(shape)


def _attention(q: Tensor, k: Tensor, v: Tensor, heads: int) -> Tensor:
    """Causal softmax attention of the last ``s_q`` positions over all ``s`` positions,
    ``q (..., s_q, d)``, ``k, v (..., s, d)`` -> ``(..., s_q, d)`` (heads split from d)."""
    *lead, sq, d = q.shape
    s, dh = k.shape[-2], d // heads
    q = q.reshape(*lead, sq, heads, dh).transpose(-3, -2)
    k, v = (t.reshape(*lead, s, heads, dh).transpose(-3, -2) for t in (k, v))
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(dh)  # (..., H, s_q, s)
    mask = torch.ones(sq, s, dtype=torch.bool, device=q.device).triu(1 + s - sq)
    scores = scores.masked_fill(mask, float("-inf"))
    z = scores.softmax(-1) @ v  # (..., H, s_q, dh)
    return z.transpose(-3, -2).reshape(*lead, sq, d)


@dataclass(frozen=True)
class TransformerSpec(ModelSpec):
    """Shape of a stacked ``transformer`` (token inputs only)."""

    kind = "transformer"
    config_keys = ("d_model", "n_heads", "n_layers", "d_mlp", "mlp_activation", "layernorm")
    end_to_end_name = "UE"
    token_inputs_only = True

    d_model: int = 128
    n_heads: int = 4
    n_layers: int = 1
    d_mlp: int = 512
    mlp_activation: str = "relu"
    layernorm: bool = False

    @classmethod
    def from_params(cls, params: dict, common: dict[str, Any]) -> TransformerSpec:
        if common["input_kind"] != "tokens":
            raise ValueError("transformer needs a token (modular) task")
        return cls(
            **{k: type(getattr(cls, k))(params.get(k, cell_default(k))) for k in cls.config_keys},
            **common,
        )

    @classmethod
    def check_params(cls, params: dict) -> list[str]:
        d = params.get("d_model", cell_default("d_model"))
        h = params.get("n_heads", cell_default("n_heads"))
        if d % h:
            return [f"d_model {d} is not a multiple of n_heads {h}; pick n_heads dividing it"]
        return []

    # --- parameters --------------------------------------------------------------------------
    @property
    def linear_input_dim(self) -> int:
        """Columns of the end-to-end map: the ``p`` residue tokens."""
        return int(self.vocab_size)

    def _layer_blocks(self, i: int) -> list[str]:
        ln = [f"ln1w{i}", f"ln1b{i}", f"ln2w{i}", f"ln2b{i}"] if self.layernorm else []
        mats = [f"Q{i}", f"K{i}", f"V{i}", f"O{i}", f"Win{i}", f"bin{i}", f"Wout{i}", f"bout{i}"]
        return mats + ln

    def blocks(self) -> list[str]:
        layers = [b for i in range(1, self.n_layers + 1) for b in self._layer_blocks(i)]
        final = ["lnfw", "lnfb"] if self.layernorm else []
        return ["E", "P", *layers, *final, "U"]

    def weight_blocks(self) -> list[str]:
        return [b for b in self.blocks() if b[0] in "EPQKVOWU"]

    def block_shapes(self) -> dict[str, tuple[int, ...]]:
        """One member's parameter shapes by block (the memory model's input; nothing allocated)."""
        d, f = self.d_model, self.d_mlp
        shapes: dict[str, tuple[int, ...]] = {
            "E": (self.vocab_size + 1, d), "P": (SEQ_LEN, d), "U": (self.num_classes, d)
        }  # fmt: skip
        for b in self.blocks():
            if b[0] in "QKVO":
                shapes[b] = (d, d)
            elif b.startswith(("Win", "Wout")):
                shapes[b] = (f, d) if b.startswith("Win") else (d, f)
            elif b not in shapes:
                shapes[b] = (f if b.startswith("bin") else d,)
        return shapes

    def activation_floats(self, n_train: int, n_test: int) -> tuple[int, int]:
        """Floats per member alive at the peak of (training step, log row), for the memory
        model (train/memory.py), counted from what the forward keeps for the backward.

        Step, per train sample: the residual stream at the input (``s d``); per layer but the
        last, over all ``s`` positions, the residual stream after attention and after the MLP,
        q, k, v and the heads' output (``6 s d``), the MLP's pre- and post-activation
        (``2 s f``) and the attention scores and weights (``2 H s^2``); the last layer runs
        queries, output map and MLP at the last position only (`forward`), so it keeps k, v and
        its input over ``s`` positions (``3 s d``), q, the heads' output and two residual
        streams at one (``4 d``), the MLP's pre- and post-activation and, at the backward's
        height, the gradient of one of them (``3 f``), and its scores (``2 H s``); then the
        logits and their log-softmax (``2 c``). Log row: the train forward's last residual
        stream and logits and the float64 separation gap of one member (``3 d + 2 c`` per train
        sample) while the test pass holds a layer's input, k and v, its MLP activation and the
        logits (``3 s d + f + c`` per test sample). Measured against the resident peak for 1-2
        layers, moduli 47 and 97 and 1-3 stacked members (``python -m twoclocks.bench
        --memory-table transformer``, docs/performance.md)."""
        s, d, f, c, h = SEQ_LEN, self.d_model, self.d_mlp, self.num_classes, self.n_heads
        full = s * (6 * d + 2 * f) + 2 * h * s * s
        last = 3 * s * d + 4 * d + 3 * f + 2 * h * s
        step = n_train * ((self.n_layers - 1) * full + last + s * d + 2 * c)
        row = n_train * (3 * d + 2 * c) + n_test * (3 * s * d + f + c)
        return step, row

    def init_member(self, gen: torch.Generator, scale: float) -> dict[str, Tensor]:
        """Draws in block order from ``gen``: every matrix N(0, 1/d_model) (``U``: N(0, 1/p)),
        biases 0, LayerNorm gains 1; times ``scale`` (Nanda et al.'s init)."""
        d, p = self.d_model, self.num_classes
        shapes = {"E": (self.vocab_size + 1, d), "P": (SEQ_LEN, d), "U": (p, d)}
        for i in range(1, self.n_layers + 1):
            shapes.update({f"{n}{i}": (d, d) for n in "QKVO"})
            shapes.update({f"Win{i}": (self.d_mlp, d), f"Wout{i}": (d, self.d_mlp)})
        out = {}
        for b in self.blocks():
            if b in shapes:
                std = 1.0 / math.sqrt(p if b == "U" else d)
                out[b] = torch.randn(shapes[b], generator=gen, dtype=torch.float64) * std
            else:
                n = self.d_mlp if b.startswith("bin") else d
                fill = 1.0 if b.startswith("ln") and "w" in b else 0.0
                out[b] = torch.full((n,), fill, dtype=torch.float64)
        return {k: v * scale for k, v in out.items()}

    # --- forward -----------------------------------------------------------------------------
    def forward(self, params: dict[str, Tensor], x: Tensor) -> Forward:
        """``x``: int64 (n, 2) token pairs; logits read at the ``=`` position."""
        e = params["E"]
        m, n = e.shape[0], x.shape[0]
        eq = torch.full((n, 1), self.vocab_size, dtype=x.dtype, device=x.device)
        seq = torch.cat([x, eq], dim=1)  # (n, 3)
        # rows picked with index_select on the member-flattened table: its backward is an
        # ordered index_add, so a member's embedding gradient has the same bits in any stack
        # (advanced indexing's accumulate did not, at n = 4,704)
        vocab = e.shape[1]
        rows = seq.reshape(1, -1) + torch.arange(m, device=x.device)[:, None] * vocab
        tokens = e.reshape(m * vocab, -1).index_select(0, rows.reshape(-1))
        resid = tokens.view(m, n, SEQ_LEN, -1) + params["P"][:, None]  # (M, n, 3, d)

        def lin(h: Tensor, name: str) -> Tensor:  # h (M, n, s, k) -> (M, n, s, out)
            w = params[name]
            return member_linear(h.reshape(m, -1, h.shape[-1]), w).view(m, n, h.shape[2], -1)

        ln = self.layernorm
        for i in range(1, self.n_layers + 1):
            h = _layer_norm(resid, *(params[f"ln1{c}{i}"] for c in "wb")) if ln else resid
            k, v = lin(h, f"K{i}"), lin(h, f"V{i}")
            if i == self.n_layers:
                # only the last position reaches the logits: the last layer's queries, output
                # map and MLP run there alone (a third of their work; same function)
                h, resid = h[:, :, -1:], resid[:, :, -1:]
            z = _attention(lin(h, f"Q{i}"), k, v, self.n_heads)
            resid = resid + lin(z, f"O{i}")
            h = _layer_norm(resid, *(params[f"ln2{c}{i}"] for c in "wb")) if ln else resid
            a = lin(h, f"Win{i}") + params[f"bin{i}"][:, None, None]
            resid = resid + lin(_act(self.mlp_activation, a), f"Wout{i}")
            resid = resid + params[f"bout{i}"][:, None, None]
        last = resid[:, :, -1]
        if ln:
            last = _layer_norm(last, params["lnfw"], params["lnfb"])
        logits = member_linear(last.contiguous(), params["U"])
        return Forward(logits=logits, z_fn=lambda: e[:, seq].detach(), pre=[], h=last)

    # --- matrices ----------------------------------------------------------------------------
    def end_to_end_factors(self, params: dict[str, Tensor]) -> list[Tensor]:
        return [params["E"][:, : self.vocab_size].mT, params["U"]]

    def matrices(self) -> list[str]:
        per_layer = [
            f"{n}{i}" for i in range(1, self.n_layers + 1) for n in ("QK", "OV", "Win", "Wout")
        ]
        return ["E", "U", *per_layer, self.end_to_end_name]

    def matrix_tensors(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        """``E`` (residue rows), ``U``, ``QK{l} = Q^T K``, ``OV{l} = O V``, the MLP matrices
        (in the parameter dtype) and ``UE`` in float64."""
        out = {"E": params["E"][:, : self.vocab_size], "U": params["U"]}
        for i in range(1, self.n_layers + 1):
            q, k, v, o = (params[f"{c}{i}"].detach() for c in "QKVO")
            out[f"QK{i}"] = q.mT @ k
            out[f"OV{i}"] = o @ v
            out[f"Win{i}"], out[f"Wout{i}"] = params[f"Win{i}"], params[f"Wout{i}"]
        out[self.end_to_end_name] = self.end_to_end(params)
        return out

    @property
    def has_residue_embedding(self) -> bool:
        return True

    def residue_embedding(self, params: dict[str, Tensor]) -> Tensor:
        return params["E"][:, : self.vocab_size]

    def reference(self) -> TransformerNet:
        return TransformerNet(self)


class TransformerNet(nn.Module):
    """Unstacked reference ``transformer`` (plain nn.Parameters, batched over samples only)."""

    def __init__(self, spec: TransformerSpec):
        super().__init__()
        self.spec = spec
        shapes = {k: v.shape for k, v in spec.init_member(torch.Generator(), 1.0).items()}
        self.params = nn.ParameterDict({k: nn.Parameter(torch.zeros(s)) for k, s in shapes.items()})

    def block_params(self) -> dict[str, nn.Parameter]:
        return {b: self.params[b] for b in self.spec.blocks()}

    def forward(self, x: Tensor) -> Tensor:
        s, w = self.spec, self.params
        eq = torch.full((x.shape[0], 1), s.vocab_size, dtype=x.dtype, device=x.device)
        resid = w["E"][torch.cat([x, eq], dim=1)] + w["P"]  # (n, 3, d)

        for i in range(1, s.n_layers + 1):
            h = (
                resid
                if not s.layernorm
                else F.layer_norm(resid, (s.d_model,), w[f"ln1w{i}"], w[f"ln1b{i}"], eps=LN_EPS)
            )
            q, k, v = (F.linear(h, w[f"{c}{i}"]) for c in "QKV")
            q, k, v = (t.view(t.shape[0], 3, s.n_heads, -1).transpose(1, 2) for t in (q, k, v))
            z = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            resid = resid + F.linear(z.transpose(1, 2).reshape(-1, 3, s.d_model), w[f"O{i}"])
            h = (
                resid
                if not s.layernorm
                else F.layer_norm(resid, (s.d_model,), w[f"ln2w{i}"], w[f"ln2b{i}"], eps=LN_EPS)
            )
            a = _act(s.mlp_activation, F.linear(h, w[f"Win{i}"], w[f"bin{i}"]))
            resid = resid + F.linear(a, w[f"Wout{i}"], w[f"bout{i}"])
        last = resid[:, -1]
        if s.layernorm:
            last = F.layer_norm(last, (s.d_model,), w["lnfw"], w["lnfb"], eps=LN_EPS)
        return F.linear(last, w["U"])
