"""Run-time support the generated Numba modules import (kept tiny and stable)."""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic


@intrinsic
def bits_to_f64(typingctx, bits):
    """Reinterpret an int64 as the float64 with the same bits (vectorisable, no call)."""
    if not isinstance(bits, types.Integer):
        return None
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        v = context.cast(builder, args[0], signature.args[0], types.int64)
        return builder.bitcast(v, ir.DoubleType())

    return sig, codegen
