"""flowfn: functional workflows on anyio, with PocketFlow's semantics, on asyncio or trio."""

from ._errors import FlowError
from ._pool import DEFAULT_LIMIT, map_ordered
from .compat import (
    AsyncBatchFlow,
    AsyncBatchNode,
    AsyncFlow,
    AsyncNode,
    AsyncParallelBatchFlow,
    AsyncParallelBatchNode,
    BaseNode,
    BatchFlow,
    BatchNode,
    Flow,
    Node,
    ParallelBatchFlow,
    ParallelBatchNode,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_LIMIT",
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
    "FlowError",
    "Node",
    "ParallelBatchFlow",
    "ParallelBatchNode",
    "map_ordered",
]
