"""The traced rule run as ``torch._foreach_*`` calls: one call per op over all tensors of a bucket.

The portable executor of the same expression DAG the C and Triton kernels are generated from
(each op's foreach form is its row of :mod:`.ops`). It takes any floating dtype on any device, so
it serves devices and dtypes the generated kernels do not, and is the reference that shows the
DAG itself is right: on the CPU a foreach op runs torch's eager kernel per tensor, so its numbers
equal the eager rule's bit for bit. Memory traffic is one pass per op, as torch.optim's foreach
path (no fusion); launches are one per op, not one per op and tensor.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from .ops import OPS
from .trace import DEVICE_OPS, LEAVES, Trace, Unsupported, device_value

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def accepts(dtype: torch.dtype, device: torch.device) -> bool:
    return dtype in FLOAT_DTYPES


class Program:
    """The live nodes of a trace and where its outputs go, ready to run over lists of tensors."""

    def __init__(self, trace: Trace, outputs: Sequence[tuple[int, int]]) -> None:
        self.outputs = list(outputs)
        self.nodes = list(trace.nodes)
        self.order = [(i, trace.nodes[i]) for i in trace.live(node for _, node in outputs)]
        for _, (op, *_args) in self.order:
            if op not in LEAVES and op not in OPS and op not in DEVICE_OPS:
                raise Unsupported(f"no foreach form of node {op}", op=op)

    def __call__(self, columns: Sequence[list[Tensor]], scalars: Sequence[Any]) -> None:
        """``columns[k]``: buffer k of every tensor (outputs may be inputs, updated in place)."""
        values: dict[int, Any] = {}
        device: dict[int, Any] = {}
        for i, (op, *args) in self.order:
            if op == "in":
                values[i] = columns[args[0]]
            elif op == "scalar":
                values[i] = scalars[args[0]]
            elif op in DEVICE_OPS or op in ("dscalar", "dconst"):  # computed on the device (capturable)
                values[i] = device_value(self.nodes, scalars, i, device)
            elif OPS[op].arity == 0:  # zeros or ones like the parameters
                values[i] = OPS[op].foreach(columns[0])
            else:
                values[i] = OPS[op].foreach(*(values[a] for a in args))
        written = {buffer for buffer, _ in self.outputs}
        results = []
        for buffer, node in self.outputs:
            value = values[node]
            # an output that is another written buffer's old value must be read before that write
            if any(value is columns[k] for k in written if k != buffer):
                value = [t.clone() for t in value]
            results.append((buffer, value))
        for buffer, value in results:
            if value is not columns[buffer]:
                torch._foreach_copy_(columns[buffer], value)


_programs: dict[tuple, Program] = {}


def kernel_for(trace: Trace, outputs: Sequence[tuple[int, int]], n_inputs: int, dtype: torch.dtype,
               structure: tuple) -> Program:
    program = _programs.get(structure)
    if program is None:
        program = _programs[structure] = Program(trace, outputs)
    return program


def launch(program: Program, bucket: Any, columns: Sequence[list[Tensor]], scalars: Sequence[float]) -> None:
    program(columns, scalars)
