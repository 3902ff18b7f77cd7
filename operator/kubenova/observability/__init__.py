"""What operators see of a running kubenova: Prometheus metrics, liveness and readiness
probes, structured logs.

Used by the controller and the agents; it observes and reports, never decides: nothing
here writes to the API server or changes what a component does.
"""
