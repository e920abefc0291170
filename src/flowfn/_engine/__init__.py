"""The engine: the node and flow classes, the walk, the pool, retries, cancellation checks,
binding, events, emit and the limiter. It imports nothing outside this package; the wings
above it (durable runs, workers, observation, the DSL) plug into it through
:mod:`flowfn._engine.hooks`."""
