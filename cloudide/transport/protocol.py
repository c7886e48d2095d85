"""Wire format of the SSM Session Manager data channel (the protocol behind ECS Exec).

Every message after the open-data-channel text frame is one binary ``ClientMessage`` (docs/ssm-protocol.md §2):
a fixed 120-byte header followed by the payload. This module only turns messages into bytes and back, and
builds the small JSON payloads the protocol defines, so that sequencing (``channel``), the client and the
local peer never touch offsets or digests.

Why the decoder is strict: the AWS client drops (and so never acknowledges) a frame whose digest does not
match, which makes the sender retransmit it. Raising a precise :class:`FrameError` lets the channel do the
same and log *why* a frame was refused, instead of delivering corrupted terminal output.
"""

from __future__ import annotations

import enum
import hashlib
import json
import random
import struct
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

HEADER_LENGTH = 116
"""The value every writer puts in HeaderLength: the offset of PayloadLength, not the header size."""
PAYLOAD_OFFSET = HEADER_LENGTH + 4
MESSAGE_TYPE_LENGTH = 32
SCHEMA_VERSION = 1
CLIENT_VERSION = "1.2.677.0"
"""Reported to the agent; at least 1.2.312.0 so that agents do not warn about output separation."""

# The message id travels as its two 64-bit halves, least significant first (docs/ssm-protocol.md §2): reading
# and writing it as two integers spares slicing and re-joining its bytes for every message.
_HEADER = struct.Struct(">I32sIQqQQQ32sII")
_HALF = 64
_HALF_MASK = (1 << _HALF) - 1
assert _HEADER.size == PAYLOAD_OFFSET


class MessageType(enum.StrEnum):
    INPUT_STREAM_DATA = "input_stream_data"
    OUTPUT_STREAM_DATA = "output_stream_data"
    ACKNOWLEDGE = "acknowledge"
    CHANNEL_CLOSED = "channel_closed"
    START_PUBLICATION = "start_publication"
    PAUSE_PUBLICATION = "pause_publication"


# The service sends publication messages with unreliable lengths and digests (docs/ssm-protocol.md §2, [G]);
# the AWS client accepts them unchecked, and so do we.
_UNCHECKED_TYPES = frozenset({MessageType.START_PUBLICATION, MessageType.PAUSE_PUBLICATION})


class PayloadType(enum.IntEnum):
    NONE = 0
    OUTPUT = 1
    ERROR = 2
    SIZE = 3
    PARAMETER = 4
    HANDSHAKE_REQUEST = 5
    HANDSHAKE_RESPONSE = 6
    HANDSHAKE_COMPLETE = 7
    ENC_CHALLENGE_REQUEST = 8
    ENC_CHALLENGE_RESPONSE = 9
    FLAG = 10
    STDERR = 11
    EXIT_CODE = 12


class Flags(enum.IntFlag):
    NONE = 0
    SYN = 1
    FIN = 2


class ActionStatus(enum.IntEnum):
    SUCCESS = 1
    FAILED = 2
    UNSUPPORTED = 3


# Every frame names its type in a space-padded 32-byte field; looking the raw field up directly saves
# decoding and stripping it for each of the thousands of messages a second a busy terminal produces.
_WIRE_NAMES = {
    member: member.value.encode("ascii").ljust(MESSAGE_TYPE_LENGTH, b" ") for member in MessageType
}
_TYPES_BY_WIRE_NAME = {wire: member for member, wire in _WIRE_NAMES.items()}


class FrameError(ValueError):
    """A binary frame that must not be processed (and so must not be acknowledged)."""


class TruncatedFrame(FrameError):
    pass


class DigestMismatch(FrameError):
    pass


class UnknownMessageType(FrameError):
    """A well-formed frame of a type this implementation does not know; callers log and ignore it."""

    def __init__(self, message_type: str) -> None:
        super().__init__(f"unknown message type {message_type!r}")
        self.message_type = message_type


class MalformedFrame(FrameError):
    pass


def new_message_id() -> uuid.UUID:
    """A random (version 4) message id.

    Ids only tell messages apart -- receivers match acks by sequence number -- so they need uniqueness,
    not unpredictability: the process's PRNG avoids the ``getrandom`` system call ``uuid4`` makes for
    each of the thousands of messages and acks a second a busy terminal sends.
    """
    return uuid.UUID(int=random.getrandbits(128), version=4)


def now_millis() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class ClientMessage:
    """One data-channel message; ``payload_type`` is an ``int``: the service sends values beyond the enum."""

    message_type: MessageType
    sequence_number: int
    payload: bytes
    payload_type: int = PayloadType.NONE
    flags: int = Flags.NONE
    message_id: uuid.UUID = field(default_factory=new_message_id)
    created_date: int = field(default_factory=now_millis)
    schema_version: int = SCHEMA_VERSION

    def payload_json(self) -> Any:
        """The payload parsed as JSON, with a :class:`MalformedFrame` naming the message on failure."""
        try:
            return json.loads(self.payload)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise MalformedFrame(
                f"{self.message_type} seq {self.sequence_number}: payload is not JSON ({error})"
            ) from error


def encode(message: ClientMessage) -> bytes:
    name = _WIRE_NAMES.get(message.message_type)
    if name is None:
        raise ValueError(f"unknown message type {message.message_type!r}")
    if message.created_date <= 0:
        raise ValueError("created_date must be a positive epoch-milliseconds value")
    message_id = message.message_id.int
    header = _HEADER.pack(
        HEADER_LENGTH,
        name,
        message.schema_version,
        message.created_date,
        message.sequence_number,
        message.flags,
        message_id & _HALF_MASK,
        message_id >> _HALF,
        hashlib.sha256(message.payload).digest(),
        message.payload_type,
        len(message.payload),
    )
    return header + message.payload


def decode(frame: bytes) -> ClientMessage:
    """Parse one binary frame, checking what the AWS client checks (docs/ssm-protocol.md §2).

    The payload runs from byte 120 to the end of the frame, as both AWS implementations read it;
    PayloadLength is only used to decide whether to check the digest.
    """
    if len(frame) < PAYLOAD_OFFSET:
        raise TruncatedFrame(f"frame is {len(frame)} bytes, shorter than the {PAYLOAD_OFFSET}-byte header")
    (
        header_length,
        raw_type,
        schema_version,
        created_date,
        sequence_number,
        flags,
        id_low,
        id_high,
        digest,
        payload_type,
        payload_length,
    ) = _HEADER.unpack_from(frame)
    message_type = _TYPES_BY_WIRE_NAME.get(raw_type) or _message_type(raw_type)
    payload = bytes(frame[PAYLOAD_OFFSET:])
    if message_type not in _UNCHECKED_TYPES:
        if header_length == 0:
            raise MalformedFrame(f"{message_type}: HeaderLength is 0")
        if created_date == 0:
            raise MalformedFrame(f"{message_type}: CreatedDate is 0")
        if payload_length != 0 and hashlib.sha256(payload).digest() != digest:
            raise DigestMismatch(
                f"{message_type} seq {sequence_number}: payload digest does not match its SHA-256 "
                f"({len(payload)} payload bytes)"
            )
    return ClientMessage(
        message_type=message_type,
        sequence_number=sequence_number,
        payload=payload,
        payload_type=payload_type,
        flags=flags,
        message_id=uuid.UUID(int=id_high << _HALF | id_low),
        created_date=created_date,
        schema_version=schema_version,
    )


def _message_type(raw_type: bytes) -> MessageType:
    """The type named by a field padded some other way than with spaces (NULs, or both)."""
    try:
        type_name = raw_type.strip(b"\x00").decode("ascii").strip()
    except UnicodeDecodeError as error:
        raise MalformedFrame(f"message type is not ASCII: {raw_type!r}") from error
    try:
        return MessageType(type_name)
    except ValueError:
        raise UnknownMessageType(type_name) from None


def _compact_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def open_data_channel(token_value: str, client_id: str, *, client_version: str = CLIENT_VERSION) -> str:
    """The first (text) frame on a fresh WebSocket: the token is the only credential the service checks."""
    return json.dumps(
        {
            "MessageSchemaVersion": "1.0",
            "RequestId": str(uuid.uuid4()),
            "TokenValue": token_value,
            "ClientId": client_id,
            "ClientVersion": client_version,
        },
        separators=(",", ":"),
    )


def acknowledgement(acked: ClientMessage) -> ClientMessage:
    """The ack for a sequenced message; receivers match it by sequence number only (docs/ssm-protocol.md §4)."""
    return ClientMessage(
        message_type=MessageType.ACKNOWLEDGE,
        sequence_number=0,
        payload=(
            _ACK_TEMPLATE % (acked.message_type.value, acked.message_id, acked.sequence_number)
        ).encode(),
        flags=_ACK_FLAGS,
    )


_ACK_FLAGS = Flags.SYN | Flags.FIN
# What ``_compact_json`` makes of an ack's content (type and id are ASCII, so nothing needs escaping),
# formatted directly: a receiver sends one ack for every message it gets.
_ACK_TEMPLATE = (
    '{"AcknowledgedMessageType":"%s","AcknowledgedMessageId":"%s",'
    '"AcknowledgedMessageSequenceNumber":%d,"IsSequentialMessage":true}'
)


def acknowledged_sequence_number(ack: ClientMessage) -> int:
    content = ack.payload_json()
    number = content.get("AcknowledgedMessageSequenceNumber") if isinstance(content, dict) else None
    if not isinstance(number, int) or isinstance(number, bool):
        raise MalformedFrame(f"acknowledge without an integer AcknowledgedMessageSequenceNumber: {content!r}")
    return number


def size_payload(rows: int, cols: int) -> bytes:
    if not (0 < rows < 2**32 and 0 < cols < 2**32):
        raise ValueError(f"terminal size must be positive: rows={rows} cols={cols}")
    return _compact_json({"cols": cols, "rows": rows})


def parse_size(payload: bytes) -> tuple[int, int]:
    """``(rows, cols)`` from a Size payload."""
    try:
        content = json.loads(payload)
        rows, cols = int(content["rows"]), int(content["cols"])
    except (ValueError, KeyError, TypeError) as error:
        raise MalformedFrame(f"Size payload is not {{'cols': n, 'rows': n}}: {payload[:100]!r}") from error
    return rows, cols


def handshake_response(processed_actions: list[dict[str, Any]], errors: list[str] | None = None) -> bytes:
    return _compact_json(
        {
            "ClientVersion": CLIENT_VERSION,
            "ProcessedClientActions": processed_actions,
            "Errors": errors or None,
        }
    )


def processed_action(action_type: str, status: ActionStatus, error: str = "") -> dict[str, Any]:
    return {"ActionType": action_type, "ActionStatus": int(status), "ActionResult": None, "Error": error}


def handshake_request(agent_version: str, session_type: str, kms_key_id: str | None = None) -> bytes:
    actions: list[dict[str, Any]] = [
        {"ActionType": "SessionType", "ActionParameters": {"SessionType": session_type, "Properties": None}}
    ]
    if kms_key_id is not None:
        actions.append({"ActionType": "KMSEncryption", "ActionParameters": {"KMSKeyId": kms_key_id}})
    return _compact_json({"AgentVersion": agent_version, "RequestedClientActions": actions})


def handshake_complete(elapsed_ns: int, customer_message: str = "") -> bytes:
    return _compact_json({"HandshakeTimeToComplete": elapsed_ns, "CustomerMessage": customer_message})


def channel_closed(session_id: str, output: str = "") -> ClientMessage:
    content = {
        "MessageId": str(uuid.uuid4()),
        "CreatedDate": str(now_millis()),
        "DestinationId": "",
        "SessionId": session_id,
        "MessageType": MessageType.CHANNEL_CLOSED.value,
        "SchemaVersion": SCHEMA_VERSION,
        "Output": output,
    }
    return ClientMessage(
        message_type=MessageType.CHANNEL_CLOSED, sequence_number=0, payload=_compact_json(content)
    )
