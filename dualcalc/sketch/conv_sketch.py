r"""CNTK / CNNGP sketch: random features of convolutional networks (docs/math.md §4).

Every image carries *per-pixel* features: an NNGP feature ψ_i (⟨ψ_i(x), ψ_j(y)⟩ ≈ K[i, j], the
pixel-pair covariance of the exact recursion) and an NTK feature φ_i (≈ Θ[i, j]), complex with
the real part of the Hermitian inner product as the estimate (the conventions of
:mod:`dualcalc.sketch.srht`).  The layers act on them as follows, with the primitives of the
fully connected sketch (:mod:`~dualcalc.sketch.srht`, :mod:`~dualcalc.sketch.polysketch`, the
generated Σ-sketch weighting of :mod:`codegen.sketch_numba`):

* input          ψ_i = x_i/√C, φ = ∅
* Conv f×f       ψ_i ← (W/√(fh·fw))·[ψ_{i+δ}]_δ ⊕ b  (the shifted copies concatenated, zero outside
                 the image: exact), φ_i ← (W/√(fh·fw))·[φ_{i+δ}]_δ ⊕ ψ_i; both concatenations
                 are brought back to the per-pixel dimension m by a phase CountSketch (the same
                 map at every pixel and image, balanced buckets, distinct ones — no error at
                 all — while the concatenation fits), computed in one pass without forming them
* Dense (NTK)    ψ ← [Wψ, b], φ ← [Wφ, ψ]  (per pixel on images)
* activation σ   per pixel, at the exact pixel variance q_i = K_xx[i, i]: u = ψ_i/‖ψ_i‖, U_l the
                 PolySketch of u^{⊗l}; ψ_i ← Σ-sketch of ⊕_l r_l(q_i) U_l, δ = Σ-sketch of
                 ⊕_l √l r_l(q_i)/√q_i U_{l−1}, φ_i ← TensorSRHT(φ_i, δ)
* AvgPool        averages of the features over the window (exact)
* GlobalAvgPool  the mean feature over all pixels (exact: ⟨mean ψ(x), mean ψ(y)⟩ = mean K)
* Flatten        the pixel features concatenated and divided by √P (exact: ⟨·,·⟩ = mean_i K[i, i])
* output         a phase CountSketch into ⌈n_components/2⌉ complex numbers, then real and
                 imaginary parts: exactly n_components real features.

The pixel variances q come from each image's own exact recursion (its NNGP self-covariance,
O(P²) per image, by the generated Numba kernel of :mod:`codegen.conv_numba` for closed-form
duals, by the NumPy reference otherwise), so the Hermite coefficients are those of the exact
kernel; only the correlations ρ are sketched.
"""
from __future__ import annotations

import numbers

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from ..conv import image_program, validate_images
from ..errors import InputError, ParameterError
from .coefficients import CoefficientTable
from .weighting import balanced_buckets, row_norms as _row_norms, weight, weight_plan as _weight_plan
from .polysketch import PolySketch
from .srht import CountSketch, TensorSRHT, random_phases, to_real

__all__ = ["ConvKernelSketch"]


def _shift_concat(F: np.ndarray, op, scale: float) -> np.ndarray:
    """(n, H, W, d) features → (n, Ho, Wo, fh·fw·d): the filter taps' shifted copies side by
    side (zero outside the image), times ``scale``."""
    n, H, W, d = F.shape
    fh, fw, ph, pw = op.fh, op.fw, op.ph, op.pw
    Ho, Wo = op.hout, op.wout
    out = np.zeros((n, Ho, Wo, fh * fw * d), dtype=F.dtype)
    k = 0
    for a in range(fh):
        for b in range(fw):
            da, db = a - ph, b - pw  # output pixel i reads input pixel i + δ
            i0, i1 = max(0, -da), min(Ho, H - da)
            j0, j1 = max(0, -db), min(Wo, W - db)
            if i0 < i1 and j0 < j1:
                out[:, i0:i1, j0:j1, k * d:(k + 1) * d] = F[:, i0 + da:i1 + da, j0 + db:j1 + db, :]
            k += 1
    if scale != 1.0:
        out *= F.dtype.type(scale)
    return out


def _scatter(st, cfg, feats, cdt) -> np.ndarray:
    """The convolution of per-pixel features followed by the count sketch ``cfg``, in one pass
    (:func:`codegen.conv_numba.conv_scatter`) without forming the concatenation."""
    from codegen.conv_numba import conv_scatter

    op = st["op"]
    F0 = feats[0]
    nb = F0.shape[0]
    out = np.zeros((nb, op.hout, op.wout, cfg["m"]), dtype=cdt)
    kern = conv_scatter()
    for F, (h, ph) in zip(feats, cfg["blocks"]):
        kern(np.ascontiguousarray(F, dtype=cdt), st["da"], st["db"], h, ph.astype(cdt), out)
    if cfg["bias"] is not None:
        b, v = cfg["bias"]
        out[..., b] += cdt.type(v)
    return out


class ConvKernelSketch(TransformerMixin, BaseEstimator):
    """Random features of a convolutional network's NTK or NNGP: Z Zᵀ ≈ net.kernel(X).ntk.

    Parameters
    ----------
    net : a dualcalc network with Conv / AvgPool / GlobalAvgPool / Flatten layers (images NHWC).
    n_components : number m of real output features.
    kernel : "ntk" or "nngp".
    degree : truncation degree of every activation's series (int, or one per activation).
    random_state : int, RandomState, Generator or None.
    internal_dim : complex dimension of the per-pixel features and of the PolySketch nodes, one
        number or one per activation (default: see :meth:`_internal_dims`); the cost per image
        grows about linearly with it.
    normalize : rescale each image's features to the norm of its exact kernel diagonal (known
        from the image's own recursion, which gives the pixel variances anyway).  The sketched
        correlations of nearly parallel per-pixel features are biased low (|ρ̂| ≤ 1 and noise
        can only shrink them), which compounds over the layers into an overall scale offset
        of the sketched kernel (a few per cent at small dimensions; the paper's code shows it
        too); the rescaling removes most of it.  The features are then consistent rather than
        unbiased.  Default True.
    precision : "single" (complex64, default) or "double".
    chunk_size : images per chunk (default: from a 512 MB working-set budget).
    """

    def __init__(self, net=None, n_components=1024, kernel="ntk", degree=8, random_state=None, *,
                 internal_dim=None, normalize=True, precision="single", chunk_size=None):
        self.net = net
        self.n_components = n_components
        self.kernel = kernel
        self.degree = degree
        self.random_state = random_state
        self.internal_dim = internal_dim
        self.normalize = normalize
        self.precision = precision
        self.chunk_size = chunk_size

    def _check_params(self):
        m = self.n_components
        if not isinstance(m, numbers.Integral) or isinstance(m, bool) or m < 2:
            raise ParameterError(f"n_components must be an integer ≥ 2, got {m!r}")
        if self.kernel not in ("ntk", "nngp"):
            raise ParameterError(f"kernel must be 'ntk' or 'nngp', got {self.kernel!r}")
        if self.precision not in ("single", "double"):
            raise ParameterError(f"precision must be 'single' or 'double', got {self.precision!r}")
        v = self.internal_dim
        if v is not None and not all(isinstance(x, numbers.Integral) and not isinstance(x, bool) and x >= 2
                                     for x in np.atleast_1d(np.asarray(v, dtype=object))):
            raise ParameterError(f"internal_dim must be an integer ≥ 2 (or one per activation) or None, got {v!r}")
        if self.chunk_size is not None and (not isinstance(self.chunk_size, numbers.Integral) or self.chunk_size < 1):
            raise ParameterError(f"chunk_size must be a positive integer, got {self.chunk_size!r}")

    # -- fit: draw the random maps, following the feature dimensions through the layers ----------
    def fit(self, X, y=None):
        self._check_params()
        X, _ = validate_images(X)
        prog = image_program(self.net, X.shape[1:])
        if not prog.serial:
            raise ParameterError("the CNTK sketch covers serial networks of stride-1 convolutions and stride = "
                                 "window average pooling only, not this one (" + "; ".join(prog.unsupported[:3])
                                 + "); use the exact kernel (network.kernel(X, backend='numpy'))")
        self.input_shape_ = tuple(X.shape[1:])
        rng = check_random_state(self.random_state)
        gen = np.random.default_rng(rng.randint(0, 2**63 - 1, dtype=np.int64))
        m = int(self.n_components)
        k_out = (m + 1) // 2
        acts = prog.act_ops
        mps = self._internal_dims(prog, k_out)
        degrees = self.degree
        if np.ndim(degrees) == 0:
            degrees = [degrees] * len(acts)
        degrees = list(degrees)
        if len(degrees) != len(acts) or not all(isinstance(L, numbers.Integral) and L >= 1 for L in degrees):
            raise ParameterError(f"degree must be a positive integer or one per activation ({len(acts)}), "
                                 f"got {self.degree!r}")
        self.degrees_ = [int(L) for L in degrees]
        ops = prog.ops
        plan = []
        dpsi, dphi = X.shape[-1], None
        a = 0
        for i, op in enumerate(ops):
            nxt = ops[i + 1].kind if i + 1 < len(ops) else None
            nxt_act = [j for j in acts if j > i]
            mp = mps[acts.index(nxt_act[0])] if nxt_act else (mps[-1] if mps else k_out)
            if op.kind == "conv":
                taps = op.fh * op.fw
                bias = op.b2 > 0
                sc = np.sqrt(op.w2 / taps)
                st = {"kind": "conv", "op": op,
                      "da": np.array([a_ - op.ph for a_ in range(op.fh) for _ in range(op.fw)], dtype=np.int64),
                      "db": np.array([b_ - op.pw for _ in range(op.fh) for b_ in range(op.fw)], dtype=np.int64)}
                D = taps * dpsi + bias
                out_psi = min(D, mp)
                st["psi"] = self._scatter_map(gen, taps, [dpsi], [sc], bias, np.sqrt(op.b2), out_psi)

                if self.kernel == "ntk":
                    blocks = [dpsi] if dphi is None else [dphi, dpsi]
                    scales = [sc] if dphi is None else [sc, sc]
                    Dphi = taps * sum(blocks) + bias
                    st["phi"] = self._scatter_map(gen, taps, blocks, scales, bias, np.sqrt(op.b2), min(Dphi, mp))

                    dphi = min(Dphi, mp)
                dpsi = out_psi
                plan.append(st)
            elif op.kind == "dense":
                dpsi = dpsi + (1 if op.b2 > 0 else 0)
                dphi = dpsi if dphi is None else dphi + dpsi
                plan.append({"kind": "dense", "op": op})
            elif op.kind == "act":
                L = self.degrees_[a]
                act = op.act
                deriv = self.kernel == "ntk" and act.dual.ntk_convention != "zero-a.e."
                out = mp
                ms = out - (dpsi + 1) if 2 * (dpsi + 1) <= out else out
                st = {"kind": "act", "index": a, "op": op, "degree": L, "out": out,
                      "poly": PolySketch(dpsi, L, ms, gen) if L >= 2 else None,
                      "plan": _weight_plan(gen, dpsi, L, out, ms), "deriv": deriv,
                      "tensor": TensorSRHT(dphi, out, out, gen) if (deriv and dphi is not None) else None,
                      "table": CoefficientTable(act, L)}
                plan.append(st)
                dpsi = out
                dphi = out if st["tensor"] is not None else None
                a += 1
            elif op.kind == "pool":
                plan.append({"kind": "pool", "op": op})
            elif op.kind in ("flatten", "gap"):
                P = op.hin * op.win
                if op.kind == "flatten":
                    dpsi *= P
                    dphi = None if dphi is None else dphi * P
                plan.append({"kind": op.kind, "op": op})
            del nxt
        final = dphi if self.kernel == "ntk" else dpsi
        plan.append({"kind": "output", "k": k_out, "dim": final,
                     "cs": CountSketch(final, k_out, gen) if final is not None else None})
        self.plan_ = plan
        self.program_ = prog
        self.internal_dims_ = mps
        return self

    @staticmethod
    def _scatter_map(gen, taps, dims, scales, bias, bval, m):
        """Phase count sketch of [block_0 shifted copies | block_1 shifted copies | bias] into m
        buckets: per block (hash (taps, d), phase·scale (taps, d)), and the bias's bucket, value."""
        total = taps * sum(dims) + (1 if bias else 0)
        h = balanced_buckets(gen, total, m)
        ph = random_phases(gen, total)
        maps, k = [], 0
        for d, sc in zip(dims, scales):
            n = taps * d
            maps.append((np.ascontiguousarray(h[k:k + n].reshape(taps, d)),
                         np.ascontiguousarray((ph[k:k + n] * sc).reshape(taps, d))))
            k += n
        b = (int(h[k]), complex(ph[k] * bval)) if bias else None
        return {"m": m, "blocks": maps, "bias": b}

    def _internal_dims(self, prog, k_out) -> list[int]:
        """Complex per-pixel dimension at every activation: ``internal_dim`` (one number or one
        per activation), by default ⌈m/2⌉ capped at 1024 at 8×8 pixels and below, halved for
        every factor 4 of more pixels (at least 64): the cost per image is about pixels ×
        dimension, and pooling averages part of the early layers' sketch errors."""
        acts = prog.act_ops
        v = self.internal_dim
        if v is None:
            out = []
            for l in acts:
                P = max(prog.ops[l].hin * prog.ops[l].win, 1)
                d = min(k_out, 1024) / np.sqrt(max(P / 64.0, 1.0))
                out.append(int(max(min(64, k_out), round(d))))
            return out
        if np.ndim(v) == 0:
            return [int(v)] * len(acts)
        v = [int(x) for x in v]
        if len(v) != len(acts):
            raise ParameterError(f"internal_dim needs one value per activation ({len(acts)}), got {len(v)}")
        return v

    # -- transform ---------------------------------------------------------------------------------
    def transform(self, X):
        check_is_fitted(self, "plan_")
        X, _ = validate_images(X)
        if tuple(X.shape[1:]) != self.input_shape_:
            raise InputError(f"the sketch was fitted on images of shape {self.input_shape_}, got {X.shape[1:]}")
        n = X.shape[0]
        m = int(self.n_components)
        out_dtype = np.float64
        cdt = np.dtype(np.complex128 if self.precision == "double" else np.complex64)
        rdt = np.float64 if cdt == np.complex128 else np.float32
        Z = np.empty((n, m), dtype=out_dtype)
        step = self._chunk()
        for s0 in range(0, n, step):
            Xc = X[s0:s0 + step]
            Z[s0:s0 + len(Xc)] = self._chunk_features(Xc, cdt, rdt)
        return Z

    def _chunk(self) -> int:
        if self.chunk_size is not None:
            return int(self.chunk_size)
        H, W, C = self.input_shape_
        mp = max(self.internal_dims_ + [1])
        taps = max([op.fh * op.fw for op in self.program_.ops if op.kind == "conv"] + [1])
        per_image = 8 * H * W * mp * (2 * taps + 4 * max(self.degrees_ + [1]) + 8)
        return int(np.clip((512 << 20) // max(per_image, 1), 1, 256))

    def _variances(self, X):
        """Each image's own exact recursion: the pre-activation pixel variances of every
        activation {op index: (n, P) or (n,)} and the final diagonal K(x, x) or Θ(x, x)
        (the generated Numba self pass for closed-form duals — the module the exact CNTK
        uses — else the NumPy reference)."""
        prog = self.program_
        ntk = self.kernel == "ntk"
        if all(prog.ops[l].act.dual.method == "closed-form" for l in prog.act_ops):
            from codegen import conv_numba as cn

            gen = cn.generate(prog, True)
            Kd, Td, tables = cn.run_self(gen, cn.load(gen), X)
        else:
            from ..conv_kernel import image_tables

            Kd, Td, tables = image_tables(prog, X, want_ntk=ntk, chunk=4, coefficients=False)
        return {l: t[0] for l, t in tables.items()}, (Td if ntk else Kd)

    def _chunk_features(self, Xc, cdt, rdt):
        nb = Xc.shape[0]
        C = Xc.shape[-1]
        q, diag = self._variances(Xc)
        psi = (Xc / np.sqrt(C)).astype(cdt)  # (nb, H, W, C)
        phi = None
        spatial = True
        for st in self.plan_[:-1]:
            kind = st["kind"]
            if kind == "conv":
                op = st["op"]
                new_psi = _scatter(st, st["psi"], [psi], cdt)
                if self.kernel == "ntk":
                    phi = _scatter(st, st["phi"], [psi] if phi is None else [phi, psi], cdt)
                psi = new_psi
            elif kind == "dense":
                op = st["op"]
                W = np.sqrt(op.w2)
                psi = psi * cdt.type(W)
                if op.b2 > 0:
                    psi = np.concatenate([psi, np.full(psi.shape[:-1] + (1,), np.sqrt(op.b2), dtype=cdt)], axis=-1)
                if self.kernel == "ntk":
                    phi = psi.copy() if phi is None else np.concatenate([phi * cdt.type(W), psi], axis=-1)
            elif kind == "act":
                op = st["op"]
                shape = psi.shape[:-1]
                rows = int(np.prod(shape))
                P2 = psi.reshape(rows, -1)
                qv = q[self._op_index(op)].reshape(rows)
                R, _ = st["table"](qv)
                with np.errstate(divide="ignore"):
                    s = np.where(qv > 0, 1.0 / np.sqrt(np.where(qv > 0, qv, 1.0)), 0.0)
                nrm = _row_norms(P2)
                u = P2 * np.where(nrm > 0, 1.0 / np.where(nrm > 0, nrm, 1.0), 0.0)[:, None].astype(rdt)
                blocks = st["poly"].transform(u, cdt)[1:] if st["poly"] is not None else []
                new_psi, delta = weight(u, blocks, R, s, st["plan"], st["deriv"], "numba")
                if st["tensor"] is not None:
                    phi = st["tensor"](phi.reshape(rows, -1), delta, cdt).reshape(shape + (-1,))
                else:
                    phi = None
                psi = new_psi.reshape(shape + (-1,))
            elif kind == "pool":
                op = st["op"]
                psi = self._pool(psi, op)
                phi = None if phi is None else self._pool(phi, op)
            elif kind in ("flatten", "gap"):
                op = st["op"]
                P = op.hin * op.win
                if kind == "flatten":
                    psi = psi.reshape(nb, -1) * cdt.type(1.0 / np.sqrt(P))
                    phi = None if phi is None else phi.reshape(nb, -1) * cdt.type(1.0 / np.sqrt(P))
                else:
                    psi = psi.reshape(nb, P, -1).mean(axis=1)
                    phi = None if phi is None else phi.reshape(nb, P, -1).mean(axis=1)
                spatial = False
        assert not spatial
        out = self.plan_[-1]
        F = phi if self.kernel == "ntk" else psi
        m = int(self.n_components)
        if F is None:  # the NTK is identically zero (σ' = 0 a.e.)
            return np.zeros((nb, m))
        F = out["cs"](np.ascontiguousarray(F), cdt)
        Z = to_real(F, m, dtype=np.float64)
        if self.normalize:  # each image's features to the norm its exact kernel diagonal has
            nrm = np.linalg.norm(Z, axis=1)
            Z *= np.where(nrm > 0, np.sqrt(np.maximum(diag, 0.0)) / np.where(nrm > 0, nrm, 1.0), 0.0)[:, None]
        return Z

    def _op_index(self, op) -> int:
        for i, o in enumerate(self.program_.ops):
            if o is op:
                return i
        raise KeyError(op)  # pragma: no cover

    @staticmethod
    def _pool(F, op):
        n, H, W, d = F.shape
        ho, wo, fh, fw = op.hout, op.wout, op.fh, op.fw
        F = F[:, :ho * fh, :wo * fw]
        return F.reshape(n, ho, fh, wo, fw, d).mean(axis=(2, 4))
