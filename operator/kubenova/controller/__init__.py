"""kopf handlers and reconcile glue for the controller Deployment. Thin: observe, decide, act."""
