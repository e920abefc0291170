"""Drop-in replacement for ``pocketflow`` 0.0.3: change only the import.

    from flowfn.compat import Node, Flow, AsyncParallelBatchFlow  # was: from pocketflow import ...

Same class names, methods, attributes, warnings and semantics, on anyio instead of raw
asyncio: async flows also run under trio, parallel batches run at most ``limit`` items at
once (``DEFAULT_LIMIT`` unless set), and a failing item cancels its siblings.
``ParallelBatchNode`` and ``ParallelBatchFlow`` are the TypeScript port's names.

The node classes are flowfn's own. The flow classes are flowfn's too, with PocketFlow's
two habits kept where flowfn's differ: a missing successor warns with PocketFlow's text
(``UserWarning: Flow ends: 'None' not found in ['again']``) where flowfn's flows name the
node and suggest a fix, and a flow without a start node runs as a no-op where flowfn's
raise :class:`~flowfn.FlowError`. Each compat flow class is a subclass of flowfn's class
of the same name, and of the compat classes PocketFlow derives it from.
"""

from __future__ import annotations

from ._engine import flows as _flows
from ._engine.nodes import (
    AsyncBatchNode,
    AsyncNode,
    AsyncParallelBatchNode,
    BaseNode,
    BatchNode,
    Node,
)
from ._engine.nodes import S as _S

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


class Flow(_flows.Flow[_S]):
    __doc__ = _flows.Flow.__doc__
    _pocketflow_compatible = True


class AsyncFlow(_flows.AsyncFlow[_S], Flow[_S]):
    __doc__ = _flows.AsyncFlow.__doc__


class BatchFlow(_flows.BatchFlow[_S], Flow[_S]):
    __doc__ = _flows.BatchFlow.__doc__


class AsyncBatchFlow(_flows.AsyncBatchFlow[_S], AsyncFlow[_S], BatchFlow[_S]):
    __doc__ = _flows.AsyncBatchFlow.__doc__


class AsyncParallelBatchFlow(_flows.AsyncParallelBatchFlow[_S], AsyncFlow[_S], BatchFlow[_S]):
    __doc__ = _flows.AsyncParallelBatchFlow.__doc__


# Plain flows are walked inline by the flow around them, as flowfn's own are.
Flow._walked_inline = AsyncFlow._walked_inline = True

ParallelBatchNode = AsyncParallelBatchNode
ParallelBatchFlow = AsyncParallelBatchFlow
