"""kubenova: Nova's instance lifecycle (resize, cold migrate, confirm, revert) on Kubernetes.

Layers, enforced by import-linter (pyproject.toml): ``cli`` -> ``controller | agent`` ->
``kube | drivers`` -> ``lifecycle | scheduling`` -> ``api``. The last three are pure.
"""
