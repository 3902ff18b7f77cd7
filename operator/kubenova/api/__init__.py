"""The public API: CRD models, every label/annotation/condition name, CRD generation.

Pure: no I/O, no kopf, no Kubernetes client. Everything users script against
(group, kinds, field names, annotation keys) is named here once.
"""
