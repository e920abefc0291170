"""Drop-in replacement for ``pocketflow`` 0.0.3: change only the import.

    from flowfn.compat import Node, Flow, AsyncParallelBatchFlow  # was: from pocketflow import ...

Same class names, methods, attributes, warnings and semantics, on anyio instead of raw
asyncio: async flows also run under trio, parallel batches run at most ``limit`` items at
once (``DEFAULT_LIMIT`` unless set), and a failing item cancels its siblings.
``ParallelBatchNode`` and ``ParallelBatchFlow`` are the TypeScript port's names.
"""

from ._flows import AsyncBatchFlow, AsyncFlow, AsyncParallelBatchFlow, BatchFlow, Flow
from ._nodes import AsyncBatchNode, AsyncNode, AsyncParallelBatchNode, BaseNode, BatchNode, Node

ParallelBatchNode = AsyncParallelBatchNode
ParallelBatchFlow = AsyncParallelBatchFlow

__all__ = [
    "AsyncBatchFlow",
    "AsyncBatchNode",
    "AsyncFlow",
    "AsyncNode",
    "AsyncParallelBatchFlow",
    "AsyncParallelBatchNode",
    "BaseNode",
    "BatchFlow",
    "BatchNode",
    "Flow",
    "Node",
    "ParallelBatchFlow",
    "ParallelBatchNode",
]
