"""Framing: the SSM_PROTOCOL.md test vectors byte for byte, and decoding that refuses bad frames."""

from __future__ import annotations

import hashlib
import json
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloudide.transport.protocol import (
    PAYLOAD_OFFSET,
    ActionStatus,
    ClientMessage,
    DigestMismatch,
    Flags,
    MalformedFrame,
    MessageType,
    PayloadType,
    TruncatedFrame,
    UnknownMessageType,
    acknowledged_sequence_number,
    acknowledgement,
    decode,
    encode,
    handshake_response,
    open_data_channel,
    parse_size,
    processed_action,
    size_payload,
)

ACK_V4 = (
    b'{"AcknowledgedMessageType":"output_stream_data","AcknowledgedMessageId":'
    b'"d4e86282-ef50-4949-ac64-a630cf2be4f9","AcknowledgedMessageSequenceNumber":0,"IsSequentialMessage":true}'
)

# (fields, hex) straight from SSM_PROTOCOL.md section 7.
VECTORS = {
    "V1": (
        dict(
            message_type=MessageType.INPUT_STREAM_DATA,
            created_date=1503434274948,
            sequence_number=1,
            flags=2,
            message_id="dd01e56b-ff48-483e-a508-b5f073f31b16",
            payload_type=0,
            payload=b"payload",
        ),
        """00000074696e7075745f73747265616d5f646174612020202020202020202020
        20202020000000010000015e0baa788400000000000000010000000000000002
        a508b5f073f31b16dd01e56bff48483e239f59ed55e737c77147cf55ad0c1b03
        0b6d7ee748a7426952f9b852d5a935e500000000000000077061796c6f6164""",
    ),
    "V2": (
        dict(
            message_type=MessageType.INPUT_STREAM_DATA,
            created_date=1700000000000,
            sequence_number=0,
            flags=0,
            message_id="11111111-2222-4333-8444-555555555555",
            payload_type=PayloadType.SIZE,
            payload=size_payload(rows=24, cols=80),
        ),
        """00000074696e7075745f73747265616d5f646174612020202020202020202020
        20202020000000010000018bcfe5680000000000000000000000000000000000
        84445555555555551111111122224333d53ca1ea7dce87c11432052a8550ed26
        15cf715ca843c89710ed83325b691cba00000003000000157b22636f6c73223a
        38302c22726f7773223a32347d""",
    ),
    "V3": (
        dict(
            message_type=MessageType.INPUT_STREAM_DATA,
            created_date=1700000000100,
            sequence_number=1,
            flags=0,
            message_id="aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee",
            payload_type=PayloadType.OUTPUT,
            payload=b"\r",
        ),
        """00000074696e7075745f73747265616d5f646174612020202020202020202020
        20202020000000010000018bcfe5686400000000000000010000000000000000
        8dddeeeeeeeeeeeeaaaaaaaabbbb4ccc9d1e0e2d9459d06523ad13e28a4093c2
        316baafe7aec5b25f30eba2e113599c400000001000000010d""",
    ),
    "V4": (
        dict(
            message_type=MessageType.ACKNOWLEDGE,
            created_date=1700000000200,
            sequence_number=0,
            flags=3,
            message_id="01234567-89ab-4cde-8f01-23456789abcd",
            payload_type=0,
            payload=ACK_V4,
        ),
        """0000007461636b6e6f776c656467652020202020202020202020202020202020
        20202020000000010000018bcfe568c800000000000000000000000000000003
        8f0123456789abcd0123456789ab4cdec79c39b86bced313bc98f6a926213928
        91209c66edb3e9a6df2b26a197dd8d5600000000000000b07b2241636b6e6f77
        6c65646765644d65737361676554797065223a226f75747075745f7374726561
        6d5f64617461222c2241636b6e6f776c65646765644d6573736167654964223a
        2264346538363238322d656635302d343934392d616336342d61363330636632
        6265346639222c2241636b6e6f776c65646765644d6573736167655365717565
        6e63654e756d626572223a302c22497353657175656e7469616c4d6573736167
        65223a747275657d""",
    ),
    "V7": (
        dict(
            message_type=MessageType.INPUT_STREAM_DATA,
            created_date=1700000000300,
            sequence_number=2,
            flags=0,
            message_id="fedcba98-7654-4321-8fed-cba987654321",
            payload_type=PayloadType.FLAG,
            payload=bytes.fromhex("00000002"),
        ),
        """00000074696e7075745f73747265616d5f646174612020202020202020202020
        20202020000000010000018bcfe5692c00000000000000020000000000000000
        8fedcba987654321fedcba9876544321433ebf5bc03dffa38536673207a21281
        612cef5faa9bc7a4d5b9be2fdb12cf1a0000000a0000000400000002""",
    ),
    "V8": (
        dict(
            message_type=MessageType.INPUT_STREAM_DATA,
            created_date=1700000000400,
            sequence_number=0,
            flags=0,
            message_id="0f0e0d0c-0b0a-4908-8706-050403020100",
            payload_type=PayloadType.HANDSHAKE_RESPONSE,
            payload=b"",  # filled from handshake_response below: the payload builder is under test too
        ),
        """00000074696e7075745f73747265616d5f646174612020202020202020202020
        20202020000000010000018bcfe5699000000000000000000000000000000000
        87060504030201000f0e0d0c0b0a49082004d04ad8209c74502be0483e137a24
        9199ff8258766dfd64644ec06ddbf66a00000006000000917b22436c69656e74
        56657273696f6e223a22312e322e302e30222c2250726f636573736564436c69
        656e74416374696f6e73223a5b7b22416374696f6e54797065223a2253657373
        696f6e54797065222c22416374696f6e537461747573223a312c22416374696f
        6e526573756c74223a6e756c6c2c224572726f72223a22227d5d2c224572726f
        7273223a6e756c6c7d""",
    ),
}


def _message(fields: dict) -> ClientMessage:
    return ClientMessage(**{**fields, "message_id": uuid.UUID(fields["message_id"])})


def _hex(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


def _v8_payload() -> bytes:
    # The vector was made with ClientVersion 1.2.0.0 (a source build); ours reports a release version.
    response = json.loads(handshake_response([processed_action("SessionType", ActionStatus.SUCCESS)]))
    assert response["ClientVersion"] >= "1.2.312.0"
    response["ClientVersion"] = "1.2.0.0"
    return json.dumps(response, separators=(",", ":")).encode()


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_encoding_matches_the_protocol_vectors(name: str) -> None:
    fields, expected = VECTORS[name]
    if name == "V8":
        fields = {**fields, "payload": _v8_payload()}

    assert encode(_message(fields)).hex() == _hex(expected).hex()


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_decoding_the_vectors_gives_back_every_field(name: str) -> None:
    fields, expected = VECTORS[name]

    message = decode(_hex(expected))

    assert message.message_type == fields["message_type"]
    assert message.created_date == fields["created_date"]
    assert message.sequence_number == fields["sequence_number"]
    assert message.flags == fields["flags"]
    assert message.message_id == uuid.UUID(str(fields["message_id"]))
    assert message.payload_type == fields["payload_type"]
    assert message.schema_version == 1
    if name != "V8":
        assert message.payload == fields["payload"]


def test_message_id_halves_are_swapped_on_the_wire() -> None:
    wire = bytes.fromhex("c679a7126e3043e5b6c7371b09d8665d")
    frame = bytearray(encode(ClientMessage(MessageType.OUTPUT_STREAM_DATA, 0, b"x")))
    frame[64:80] = wire

    assert decode(bytes(frame)).message_id == uuid.UUID("b6c7371b-09d8-665d-c679-a7126e3043e5")


def test_acknowledgement_has_the_ack_shape_and_names_the_sequence_number() -> None:
    acked = ClientMessage(
        MessageType.OUTPUT_STREAM_DATA, 0, b"x", message_id=uuid.UUID("d4e86282-ef50-4949-ac64-a630cf2be4f9")
    )

    ack = decode(encode(acknowledgement(acked)))

    assert ack.message_type is MessageType.ACKNOWLEDGE
    assert (ack.sequence_number, ack.flags, ack.payload_type) == (0, Flags.SYN | Flags.FIN, 0)
    assert json.loads(ack.payload) == json.loads(ACK_V4)
    assert acknowledged_sequence_number(ack) == 0


def test_open_data_channel_carries_the_token_and_fresh_request_ids() -> None:
    first = json.loads(open_data_channel("tok", "client-1"))
    second = json.loads(open_data_channel("tok", "client-1"))

    assert list(first) == ["MessageSchemaVersion", "RequestId", "TokenValue", "ClientId", "ClientVersion"]
    assert (first["MessageSchemaVersion"], first["TokenValue"], first["ClientId"]) == (
        "1.0",
        "tok",
        "client-1",
    )
    assert first["RequestId"] != second["RequestId"]
    assert uuid.UUID(first["RequestId"]).version == 4


def test_size_payload_round_trips_and_refuses_nonsense() -> None:
    assert parse_size(size_payload(rows=50, cols=132)) == (50, 132)
    with pytest.raises(ValueError, match="positive"):
        size_payload(rows=0, cols=80)
    with pytest.raises(MalformedFrame, match="Size payload"):
        parse_size(b'{"cols": 80}')


messages = st.builds(
    ClientMessage,
    message_type=st.sampled_from(list(MessageType)),
    sequence_number=st.integers(min_value=0, max_value=2**63 - 1),
    payload=st.binary(max_size=2048),
    payload_type=st.integers(min_value=0, max_value=2**32 - 1),
    flags=st.integers(min_value=0, max_value=2**64 - 1),
    message_id=st.uuids(),
    created_date=st.integers(min_value=1, max_value=2**64 - 1),
)


@given(messages)
def test_decode_inverts_encode(message: ClientMessage) -> None:
    assert decode(encode(message)) == message


@given(
    messages.filter(lambda m: m.payload and m.message_type not in ("start_publication", "pause_publication")),
    st.data(),
)
def test_any_corrupted_payload_byte_is_rejected(message: ClientMessage, data: st.DataObject) -> None:
    frame = bytearray(encode(message))
    index = data.draw(st.integers(min_value=PAYLOAD_OFFSET, max_value=len(frame) - 1))
    frame[index] ^= data.draw(st.integers(min_value=1, max_value=255))

    with pytest.raises(DigestMismatch, match="digest"):
        decode(bytes(frame))


@given(
    messages.filter(lambda m: m.payload and m.message_type not in ("start_publication", "pause_publication")),
    st.data(),
)
def test_any_corrupted_digest_byte_is_rejected(message: ClientMessage, data: st.DataObject) -> None:
    frame = bytearray(encode(message))
    frame[data.draw(st.integers(min_value=80, max_value=111))] ^= 0x01

    with pytest.raises(DigestMismatch):
        decode(bytes(frame))


@given(messages, st.data())
def test_frames_shorter_than_the_header_are_rejected(message: ClientMessage, data: st.DataObject) -> None:
    frame = encode(message)
    cut = data.draw(st.integers(min_value=0, max_value=PAYLOAD_OFFSET - 1))

    with pytest.raises(TruncatedFrame, match=f"{cut} bytes"):
        decode(frame[:cut])


def test_a_payload_cut_short_fails_the_digest() -> None:
    frame = encode(ClientMessage(MessageType.OUTPUT_STREAM_DATA, 7, b"hello world"))

    with pytest.raises(DigestMismatch, match="seq 7"):
        decode(frame[:-3])


def test_unknown_message_types_are_named_in_the_error() -> None:
    frame = bytearray(encode(ClientMessage(MessageType.OUTPUT_STREAM_DATA, 0, b"x")))
    frame[4:36] = b"agent_session_state".ljust(32, b" ")

    with pytest.raises(UnknownMessageType, match="agent_session_state") as caught:
        decode(bytes(frame))
    assert caught.value.message_type == "agent_session_state"


def test_zero_created_date_is_malformed_but_publication_messages_are_not_checked() -> None:
    frame = bytearray(encode(ClientMessage(MessageType.OUTPUT_STREAM_DATA, 0, b"x")))
    frame[40:48] = bytes(8)
    with pytest.raises(MalformedFrame, match="CreatedDate"):
        decode(bytes(frame))

    publication = bytearray(encode(ClientMessage(MessageType.START_PUBLICATION, 0, b"{}")))
    publication[80:112] = bytes(32)  # the service's publication digests are not reliable
    assert decode(bytes(publication)).message_type is MessageType.START_PUBLICATION


def test_message_type_padding_with_nuls_is_accepted() -> None:
    frame = bytearray(encode(ClientMessage(MessageType.OUTPUT_STREAM_DATA, 3, b"abc")))
    frame[4:36] = b"output_stream_data".rjust(32, b"\x00")

    assert decode(bytes(frame)).message_type is MessageType.OUTPUT_STREAM_DATA


def test_payload_is_everything_after_the_header_and_its_digest_is_sha256() -> None:
    frame = encode(ClientMessage(MessageType.OUTPUT_STREAM_DATA, 0, b"\x00\xffdata"))

    assert frame[PAYLOAD_OFFSET:] == b"\x00\xffdata"
    assert frame[80:112] == hashlib.sha256(b"\x00\xffdata").digest()
