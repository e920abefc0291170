"""flowfn: functional workflows on anyio, with PocketFlow's semantics, on asyncio or trio."""

from ._dsl.branches import Parallel
from ._dsl.decorators import (
    FunctionBatchFlow,
    FunctionBatchNode,
    FunctionNode,
    FunctionParallelBatchNode,
    batch,
    node,
    parallel_batch,
)
from ._dsl.ir import from_ir, ir_schema
from ._durable.cache import Cache
from ._durable.journal import item_key
from ._durable.pause import Paused, Question, ask
from ._durable.store import (
    BatchInfo,
    CheckpointStore,
    JSONSerializer,
    PickleSerializer,
    RunInfo,
    Serializer,
    SQLiteStore,
)
from ._durable.work import work, work_async
from ._engine.emit import FlowOutput, emit, emit_sync
from ._engine.errors import FlowEndsWarning, FlowError, other_errors
from ._engine.events import Event, EventKind, Observer
from ._engine.flows import AsyncBatchFlow, AsyncFlow, AsyncParallelBatchFlow, BatchFlow, Flow
from ._engine.limiter import Limiter
from ._engine.local import local
from ._engine.nodes import (
    AsyncBatchNode,
    AsyncNode,
    AsyncParallelBatchNode,
    BaseNode,
    BatchNode,
    Node,
)
from ._engine.pool import DEFAULT_LIMIT, BatchResults, map_ordered, stream
from ._observe.observers import LogObserver, NodeStats, RunSummary
from ._observe.progress import EchoHandler, Progress, echo
from ._workers.remote import RemoteTraceback

# The TypeScript port's names.
ParallelBatchNode = AsyncParallelBatchNode
ParallelBatchFlow = AsyncParallelBatchFlow

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_LIMIT",
    "BatchInfo",
    "Cache",
    "EchoHandler",
    "CheckpointStore",
    "JSONSerializer",
    "PickleSerializer",
    "RunInfo",
    "SQLiteStore",
    "Serializer",
    "Event",
    "EventKind",
    "Limiter",
    "LogObserver",
    "NodeStats",
    "Observer",
    "Paused",
    "Progress",
    "RemoteTraceback",
    "RunSummary",
    "AsyncBatchFlow",
    "AsyncBatchNode",
    "AsyncFlow",
    "AsyncNode",
    "AsyncParallelBatchFlow",
    "AsyncParallelBatchNode",
    "BaseNode",
    "BatchFlow",
    "BatchResults",
    "BatchNode",
    "Flow",
    "FlowEndsWarning",
    "FlowError",
    "FlowOutput",
    "FunctionBatchFlow",
    "FunctionBatchNode",
    "FunctionNode",
    "FunctionParallelBatchNode",
    "Node",
    "ParallelBatchFlow",
    "Parallel",
    "ParallelBatchNode",
    "Question",
    "ask",
    "batch",
    "echo",
    "emit",
    "emit_sync",
    "from_ir",
    "ir_schema",
    "item_key",
    "local",
    "map_ordered",
    "node",
    "other_errors",
    "parallel_batch",
    "stream",
    "work",
    "work_async",
]


def _public_module_names() -> None:
    """Give each public name the module users import it from, as trio does.

    Reprs, tracebacks and pickles then say ``flowfn.FlowError``, not
    ``flowfn._engine.errors.FlowError``; both spellings name the same object.
    """
    for name in __all__:
        obj = globals()[name]
        if getattr(obj, "__module__", "").startswith("flowfn._"):
            obj.__module__ = "flowfn"


_public_module_names()
