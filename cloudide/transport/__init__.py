"""ECS Exec transport: the SSM data-channel protocol, a reconnecting terminal client and a local peer.

``protocol`` is the wire format, ``channel`` the sequencing and acknowledgement rules, ``client`` the
terminal that survives dropped channels, ``peer`` the agent side for local runs and tests, and ``faults``
the failures tests inject between them. ``sessions_api`` is the REST API as terminal clients call it
(connect, read); ``gateway`` and ``gateway_hub`` serve browsers.
"""

from cloudide.transport.client import (
    ConnectFailed,
    ConnectionState,
    Connector,
    EncryptionNotSupported,
    ExecCredentials,
    SessionEnded,
    TerminalConnection,
    TransportError,
)

__all__ = [
    "ConnectFailed",
    "ConnectionState",
    "Connector",
    "EncryptionNotSupported",
    "ExecCredentials",
    "SessionEnded",
    "TerminalConnection",
    "TransportError",
]
