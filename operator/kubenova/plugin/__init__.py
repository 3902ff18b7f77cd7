"""`kubectl nova`: Nova's resize, migrate, confirm, revert and migration-list for kubectl.

A client like kubectl, in the cli layer: it acts only through the public interface a
user has (spec.flavor, the compute.kubenova.io/resize and /migrate annotations, reading
status), by running kubectl itself, so kubeconfig, context, namespace and the API
server's own refusals behave exactly as with kubectl.
"""
