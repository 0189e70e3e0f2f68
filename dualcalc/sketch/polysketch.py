r"""PolySketch (Ahle et al., SODA 2020): sketches of u^{⊗l} for every degree l ≤ L at once.

A complete binary tree over p = 2^K leaf positions (p ≥ L).  Leaf i holds the input row
u itself (``leaves="exact"``) or an independent CountSketch C_i u (``leaves="countsketch"``,
for scipy.sparse rows: O(nnz) per leaf).  Internal node (k, i) covers the leaves
[i·2^k, (i+1)·2^k) and is the TensorSRHT T_{k,i} of its two children, so the root
sketches u^{⊗p} with error growing polynomially (not exponentially) in p.

Lower degrees come from the *same* tree (docs/math.md §4): the degree-l sketch is the
tree evaluated with u at leaves 0..l−1 and e₁ at the others.  A subtree made only of
e₁ leaves sketches the unit vector e₁^{⊗s} (inner product exactly 1), so it is skipped
— a node whose right subtree is all e₁ passes its left child up unchanged — which
is cheaper than and at least as accurate as sketching e₁.  Every degree needs only the
nodes on one root-to-leaf path beyond the shared full subtrees: about popcount(l) − 1
extra TensorSRHTs, each reusing the cached left FFT.

Unbiasedness: the two inputs of every TensorSRHT come from disjoint leaf sets, hence
from independent randomness, so E⟨U_l(x), U_l(y)⟩ = ⟨x, y⟩^l for every l (with exact
leaves; with CountSketch leaves likewise, E over the leaf sketches too).
"""
from __future__ import annotations

import numpy as np

from .srht import CountSketch, TensorSRHT, array_module, complex_dtype

__all__ = ["PolySketch"]


class PolySketch:
    """All-degree PolySketch of rows u ∈ C^D (or sparse R^D) into C^m.

    Parameters
    ----------
    in_dim : D, the dimension of the rows.
    degree : L ≥ 1, the highest degree.
    out_dim : m, the (complex) dimension of every U_l, l ≥ 2.
    rng : numpy Generator.
    leaves : ``"exact"`` (U_1 = u, leaves are u itself) or ``"countsketch"`` (leaf i is an
        independent CountSketch of u into ``leaf_dim`` coordinates; U_1 = C_0 u).
    """

    def __init__(self, in_dim: int, degree: int, out_dim: int, rng: np.random.Generator, *,
                 leaves: str = "exact", leaf_dim: int | None = None):
        if degree < 1:
            raise ValueError(f"PolySketch degree must be ≥ 1, got {degree}")
        if leaves not in ("exact", "countsketch"):
            raise ValueError(f"leaves must be 'exact' or 'countsketch', got {leaves!r}")
        self.in_dim, self.degree, self.out_dim = int(in_dim), int(degree), int(out_dim)
        self.leaves = leaves
        self.levels = max(1, int(np.ceil(np.log2(max(degree, 2)))))
        self.n_leaves = 2 ** self.levels
        self.leaf_dim = self.in_dim if leaves == "exact" else int(leaf_dim or out_dim)
        self.leaf_sketches = ([CountSketch(self.in_dim, self.leaf_dim, rng) for _ in range(self.degree)]
                              if leaves == "countsketch" else None)
        # TensorSRHTs only for nodes that some degree ≤ L touches: node (k, i) is used
        # iff it has at least two leaves inside [0, L) on both sides, i.e. i·2^k + 2^{k−1} < L.
        self.nodes: dict[tuple[int, int], TensorSRHT] = {}
        for k in range(1, self.levels + 1):
            half = 2 ** (k - 1)
            for i in range(self.n_leaves // 2 ** k):
                if i * 2**k + half < self.degree:
                    d1 = self.leaf_dim if k == 1 else self.out_dim
                    d2 = max(self.leaf_dim, self.out_dim) if k > 1 else self.leaf_dim
                    self.nodes[(k, i)] = TensorSRHT(d1, d2, self.out_dim, rng)

    # -- evaluation ---------------------------------------------------------------
    def transform(self, U, dtype=None) -> list:
        """[U_1, ..., U_L] for the rows of U (n, D): E⟨U_l(x), U_l(y)⟩ = ⟨x, y⟩^l.

        U_0 = 1 is implicit.  With exact leaves U_1 is the input itself (no sketch).
        """
        if dtype is None:
            dtype = complex_dtype(U.dtype)
        dtype = np.dtype(dtype)
        ev = _Evaluation(self, U, dtype)
        return [ev.value(self.levels, 0, l) for l in range(1, self.degree + 1)]


class _Evaluation:
    """One transform call: caches full subtrees and left FFTs shared between degrees."""

    def __init__(self, ps: PolySketch, U, dtype):
        self.ps, self.dtype = ps, dtype
        self.full: dict = {}
        self.left: dict = {}
        if ps.leaves == "exact":
            xp = array_module(U)
            self.leaf_values = [xp.asarray(U, dtype=dtype)] * ps.degree
        else:
            self.leaf_values = [cs(U, dtype) for cs in ps.leaf_sketches]

    def leaf(self, i):
        return self.leaf_values[i]

    def full_node(self, k, i):
        if k == 0:
            return self.leaf(i)
        key = (k, i)
        if key not in self.full:
            t = self.ps.nodes[key]
            A = self.left_fft(k, i)
            B = t.right(self.full_node(k - 1, 2 * i + 1), self.dtype)
            self.full[key] = t.combine(A, B)
        return self.full[key]

    def left_fft(self, k, i):
        key = (k, i)
        if key not in self.left:
            self.left[key] = self.ps.nodes[key].left(self.full_node(k - 1, 2 * i), self.dtype)
        return self.left[key]

    def value(self, k, i, l):
        """Node (k, i) evaluated with u at leaves < l and e₁ (skipped) at the others."""
        lo, hi = i * 2**k, (i + 1) * 2**k
        if hi <= l:
            return self.full_node(k, i)
        if lo >= l:
            return None
        right_lo = lo + 2 ** (k - 1)
        if right_lo >= l:  # right subtree is all e₁: pass the left child up
            return self.value(k - 1, 2 * i, l)
        t = self.ps.nodes[(k, i)]
        right = self.value(k - 1, 2 * i + 1, l)
        return t.combine(self.left_fft(k, i), t.right(right, self.dtype))
