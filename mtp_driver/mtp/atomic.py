"""An atomic counter for Numba's parallel loops: threads take work items one at a time, so a thread slowed by
the machine (another tenant on its core) takes fewer, and no thread waits with nothing left to take."""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.extending import intrinsic


@intrinsic
def take_next(typingctx, counter):
    """counter[0] += 1 atomically, for an int64 array `counter`; the value before (the item taken)."""
    if not (isinstance(counter, types.Array) and counter.dtype == types.int64 and counter.ndim == 1):
        raise TypeError(f"the counter must be a 1-d int64 array, got {counter}")

    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, signature.args[0], array, [cgutils.intp_t(0)])
        return builder.atomic_rmw("add", pointer, ir.Constant(ir.IntType(64), 1), "monotonic")

    return types.int64(counter), codegen
