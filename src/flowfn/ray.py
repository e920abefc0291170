"""Batch items as Ray tasks: ``workers=RayWorkers(...)`` (extra ``flowfn[ray]``).

flowfn never starts or stops a Ray cluster: connect first with ``ray.init()`` (a local
one) or ``ray.init(address="ray://host:10001")`` (a real one), then run the flow::

    import ray
    from flowfn import parallel_batch
    from flowfn.ray import RayWorkers

    ray.init(num_cpus=2)

    @parallel_batch(items="docs", into="sizes", workers=RayWorkers(chunksize=10), limit=100)
    def size(doc):
        return len(doc)

The function travels by value (Ray's cloudpickle, so lambdas and closures work), with the
items of its chunk and the params it takes by name; flowfn itself must be installed on
the workers.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

import anyio

from ._engine.errors import FlowError
from ._workers.remote import RemoteTraceback, RemoteWorkers, run_chunk

__all__ = ["RayWorkers"]


class RayWorkers(RemoteWorkers):
    """Run each chunk of ``chunksize`` items as one Ray task, with Ray's remote
    ``options`` (``num_cpus=``, ``num_gpus=``, ``resources=``, ``max_retries=``, ...).

    ``limit=`` on the node bounds the items submitted and not yet collected.
    On cancellation (fail-fast, an outside cancellation, ``timeout=``) the task is
    cancelled with ``ray.cancel``, which interrupts running Python code; if it has not
    stopped after ``grace`` seconds (a long call into C), its worker process is killed
    (``force=True``). Either way the flow returns only once the task is over.
    A task's exception reaches the caller as itself (Ray's ``RayTaskError`` unwrapped),
    with the remote traceback in its ``__cause__``.
    """

    def __init__(self, chunksize: int = 1, *, grace: float = 5.0, **options: Any) -> None:
        if not isinstance(chunksize, int) or isinstance(chunksize, bool) or chunksize < 1:
            raise ValueError(f"RayWorkers: chunksize must be an int >= 1, got {chunksize!r}")
        if not isinstance(grace, (int, float)) or isinstance(grace, bool) or grace < 0:
            raise ValueError(f"RayWorkers: grace must be a number of seconds >= 0, got {grace!r}")
        try:
            import ray
        except ImportError as exc:
            raise ImportError(
                "RayWorkers needs Ray: pip install 'flowfn[ray]' (or pip install ray)"
            ) from exc
        self.chunksize, self.grace, self.options = chunksize, float(grace), options
        self.pickler = "ray.cloudpickle"  # what Ray sends things with
        self._task = ray.remote(**options)(run_chunk) if options else ray.remote(run_chunk)

    def submit(
        self, target: Any, kwargs: dict[str, Any], chunk: list[Any]
    ) -> tuple[Future[Any], Any]:
        """Start one Ray task for ``chunk``; a :class:`~flowfn.FlowError` before ``ray.init()``.

        Returns the task's future and its ``ObjectRef`` (which :meth:`stop` cancels).
        """
        import ray

        # Ray would start a cluster of its own at the first .remote(): flowfn never does.
        if not ray.is_initialized():
            raise FlowError(
                "RayWorkers: Ray is not connected. Call ray.init() first: ray.init() starts "
                "a local cluster, ray.init(address='ray://<head>:10001') joins a real one."
            )
        ref = self._task.remote(target, kwargs, chunk, 0, self.pickler)
        return ref.future(), ref

    async def stop(self, future: Future[Any], handle: Any, done: anyio.Event) -> None:
        """Cancel a task whose batch was cancelled: interrupt it, and after ``grace``
        seconds end its worker process. Returns once the task has ended."""
        import ray

        ray.cancel(handle)
        with anyio.move_on_after(self.grace):
            await done.wait()
            return
        ray.cancel(handle, force=True)  # a long C call ignores the interrupt: end its worker
        await done.wait()

    def unwrap(self, exc: BaseException) -> BaseException:
        """The user's own exception out of Ray's ``RayTaskError``, with the remote
        traceback as its ``__cause__``; other exceptions as they are."""
        import ray.exceptions

        if isinstance(exc, ray.exceptions.RayTaskError):
            cause = exc.cause
            if isinstance(cause, BaseException) and not isinstance(cause, ray.exceptions.RayError):
                cause.__cause__ = RemoteTraceback(str(exc))
                return cause
        return exc

    def __repr__(self) -> str:
        options = "".join(f", {k}={v!r}" for k, v in self.options.items())
        return f"RayWorkers(chunksize={self.chunksize}{options})"
