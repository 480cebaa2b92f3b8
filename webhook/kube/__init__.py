"""The Kubernetes adapter: the only place that imports `kubernetes`.

`NodeView` keeps the cluster's Nodes current (list, then watch) as node groups; `PullSecrets` turns a
Pod's imagePullSecrets (or its ServiceAccount's) into a keyring, for that namespace only.
"""

from webhook.kube.client import api_client
from webhook.kube.nodes import NodeView, node_groups
from webhook.kube.secrets import PullSecrets, secret_keyring

__all__ = ["NodeView", "PullSecrets", "api_client", "node_groups", "secret_keyring"]
