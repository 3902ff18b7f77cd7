"""Names users and components script against: group, kinds, labels, annotations, conditions.

Every key is a named constant here so the controller, the agents, the CRDs, the chart
and the tests cannot drift apart on spelling.
"""

from __future__ import annotations

import enum

GROUP = "compute.kubenova.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# All kubenova kinds share this category: `kubectl get kubenova` lists them together.
CATEGORY = "kubenova"

# Labels the controller sets so each agent can select its own objects server-side.
LABEL_NODE = f"{GROUP}/node"
LABEL_SOURCE_NODE = f"{GROUP}/source-node"
LABEL_DEST_NODE = f"{GROUP}/dest-node"
LABEL_INSTANCE = f"{GROUP}/instance"

# Actions: annotations on the Instance; the controller removes them once acted on.
ANNOTATION_RESIZE = f"{GROUP}/resize"
ANNOTATION_MIGRATE = f"{GROUP}/migrate"

FINALIZER = f"{GROUP}/cleanup"

# The signer of the agents' transfer serving certificates (CertificateSigningRequests): the
# controller approves and signs a request for node N only from an agent token bound to N.
TRANSFER_SIGNER = f"{GROUP}/transfer"
# Where the API server records the node a service-account token is bound to (via its pod).
EXTRA_NODE_NAME = "authentication.kubernetes.io/node-name"


class ResizeAction(enum.StrEnum):
    """Values of the resize annotation, accepted only in VERIFY_RESIZE."""

    CONFIRM = "confirm"
    REVERT = "revert"


class ConditionType(enum.StrEnum):
    """Condition types on an Instance (Kubernetes API conventions)."""

    READY = "Ready"
    SCHEDULED = "Scheduled"
    RESIZE_FAILED = "ResizeFailed"
    MIGRATE_FAILED = "MigrateFailed"
    FLAVOR_VALID = "FlavorValid"
    CONFIRM_FAILED = "ConfirmFailed"  # the last confirm failed; it is retried (VERIFY_RESIZE)
    NODE_DOWN = "NodeDown"  # a node the instance waits for is down (names it, and since when)


# Ready=False while the node keeps an instance's disk but its hypervisor has no guest (the
# domain or VirtualMachine deleted outside kubenova): the controller's word to the node's
# agent that it may define the guest again from that disk.
GUEST_MISSING = "GuestMissing"


class ConditionStatus(enum.StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"
