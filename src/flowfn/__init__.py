"""flowfn: functional workflows on anyio, with PocketFlow's semantics, on asyncio or trio."""

from ._branches import Parallel
from ._cache import Cache
from ._decorators import (
    FunctionBatchFlow,
    FunctionBatchNode,
    FunctionNode,
    FunctionParallelBatchNode,
    batch,
    node,
    parallel_batch,
)
from ._emit import FlowOutput, emit, emit_sync
from ._errors import FlowEndsWarning, FlowError, other_errors
from ._events import Event, EventKind, Observer
from ._flows import AsyncBatchFlow, AsyncFlow, AsyncParallelBatchFlow, BatchFlow, Flow
from ._ir import from_ir, ir_schema
from ._journal import item_key
from ._limiter import Limiter
from ._local import local
from ._nodes import AsyncBatchNode, AsyncNode, AsyncParallelBatchNode, BaseNode, BatchNode, Node
from ._observers import LogObserver, NodeStats, RunSummary
from ._pause import Paused, Question, ask
from ._pool import DEFAULT_LIMIT, BatchResults, map_ordered, stream
from ._progress import EchoHandler, Progress, echo
from ._remote import RemoteTraceback
from ._store import (
    BatchInfo,
    CheckpointStore,
    JSONSerializer,
    PickleSerializer,
    RunInfo,
    Serializer,
    SQLiteStore,
)
from ._work import work, work_async

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
    ``flowfn._errors.FlowError``; both spellings name the same object.
    """
    for name in __all__:
        obj = globals()[name]
        if getattr(obj, "__module__", "").startswith("flowfn._"):
            obj.__module__ = "flowfn"


_public_module_names()
