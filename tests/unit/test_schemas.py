import json
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from pydantic import ValidationError

from schemas.events import Event, EventType
from schemas.messages import (
    MAX_DEAD_LETTER_PAYLOAD,
    MAX_MESSAGE_BYTES,
    DeadLetter,
    MessageDecodeError,
    decode_event,
    encode_event,
)
from schemas.state import ArrayFormatError, StateKeys, decode_array, encode_array


def test_minimal_event_gets_defaults_and_completion_assigns_id_and_time():
    event = Event(user_id="u", item_id="i")
    assert event.event_type is EventType.click and event.value == 1.0
    assert event.scenario == "default" and event.event_id is None and event.timestamp is None
    done = event.completed()
    assert done.event_id and len(done.event_id) == 32 and done.timestamp is not None
    assert event.completed().event_id != done.event_id  # fresh UUID each time
    given = Event(user_id="u", item_id="i", event_id="e1").completed()
    assert given.event_id == "e1"


@pytest.mark.parametrize(
    "body, field",
    [
        ({"item_id": "i"}, "user_id"),
        ({"user_id": "", "item_id": "i"}, "user_id"),
        ({"user_id": "u" * 129, "item_id": "i"}, "user_id"),
        ({"user_id": "u", "item_id": "i", "value": "high"}, "value"),
        ({"user_id": "u", "item_id": "i", "value": math.nan}, "value"),
        ({"user_id": "u", "item_id": "i", "value": math.inf}, "value"),
        ({"user_id": "u", "item_id": "i", "event_type": "teleport"}, "event_type"),
        ({"user_id": "u", "item_id": "i", "colour": "red"}, "colour"),
        ({"user_id": "u", "item_id": "i", "timestamp": "1969-12-31T23:59:59Z"}, "timestamp"),
        ({"user_id": "u", "item_id": "i", "timestamp": -1}, "timestamp"),
        ({"user_id": "u", "item_id": "i", "context": {str(k): "v" for k in range(17)}},
         "context"),
    ],
)
def test_invalid_events_name_the_field(body, field):
    with pytest.raises(ValidationError) as info:
        Event.model_validate(body)
    assert field in {str(error["loc"][0]) for error in info.value.errors()}


def test_unix_seconds_from_the_epoch_are_accepted():
    # synthetic streams count seconds from 0
    assert Event(user_id="u", item_id="i", timestamp=0).timestamp == datetime(1970, 1, 1,
                                                                              tzinfo=UTC)
    assert Event(user_id="u", item_id="i", timestamp=39_999).timestamp.year == 1970


def test_future_timestamp_beyond_skew_is_rejected_but_near_future_is_fine():
    now = datetime.now(UTC)
    Event(user_id="u", item_id="i", timestamp=now + timedelta(hours=1))
    with pytest.raises(ValidationError):
        Event(user_id="u", item_id="i", timestamp=now + timedelta(days=30))


def test_message_round_trip_keyed_by_user():
    event = Event(user_id="alice", item_id="i9", value=0.0, context={"page": "home"}).completed()
    key, value = encode_event(event, accepted_at=123.5)
    assert key == b"alice"
    envelope = decode_event(value)
    assert envelope.event == event and envelope.accepted_at == 123.5
    assert json.loads(value)["schema"] == 1


def test_incomplete_events_are_not_encoded():
    with pytest.raises(ValueError):
        encode_event(Event(user_id="u", item_id="i"), 0.0)


@pytest.mark.parametrize(
    "payload, reason",
    [
        (None, "empty"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        (b'{"schema": 1, "event": {"user_id": "u"', "not JSON"),
        (b"[1, 2, 3]", "JSON object"),
        (b'{"schema": 99, "event": {}}', "schema version"),
        (b'{"hello": "world"}', "schema version"),
        (b'{"schema": 1, "accepted_at": 1, "event": {"user_id": "u"}}', "item_id"),
        (b'{"schema": 1, "accepted_at": 1, "event": {"user_id": "u", "item_id": "i"}}',
         "event_id"),
        (b"x" * (MAX_MESSAGE_BYTES + 1), "exceeds"),
    ],
)
def test_bad_messages_raise_with_reason(payload, reason):
    with pytest.raises(MessageDecodeError) as info:
        decode_event(payload)
    assert reason in info.value.reason


def test_dead_letter_round_trip_truncates_payload():
    payload = b"z" * (MAX_DEAD_LETTER_PAYLOAD + 100)
    letter = DeadLetter("not JSON", "events", 1, 42, payload)
    record = json.loads(letter.encode())
    assert record["payload_bytes"] == len(payload)
    back = DeadLetter.decode(letter.encode())
    assert back.reason == "not JSON" and (back.topic, back.partition, back.offset) == (
        "events", 1, 42)
    assert back.payload == payload[:MAX_DEAD_LETTER_PAYLOAD]


@pytest.mark.parametrize("dtype", ["<f4", "<f8", "<i4", "<i8", "<i2", "<u1", "<f2", ">f4"])
def test_array_round_trip(dtype):
    rng = np.random.default_rng(0)
    array = (rng.standard_normal((3, 5)) * 10).astype(dtype)
    back = decode_array(encode_array(array))
    assert back.shape == (3, 5) and back.dtype == np.dtype(dtype).newbyteorder("<")
    np.testing.assert_array_equal(back, array)


def test_array_decoding_rejects_foreign_or_truncated_bytes():
    blob = encode_array(np.arange(10, dtype=np.int32))
    for bad in (b"", b"\x80\x04pickle" + blob, blob[:-1], b"XXXX" + blob[4:]):
        with pytest.raises(ArrayFormatError):
            decode_array(bad)
    with pytest.raises(ArrayFormatError):
        encode_array(np.array(["a"]))


def test_state_keys_share_the_prefix():
    keys = StateKeys("p1")
    names = [keys.trainer_progress, keys.model_current, keys.model_meta(3),
             keys.model_array(3, "items"), keys.user_seen("u"), keys.trainer_state("x")]
    assert all(name.startswith("p1:") for name in names)
    assert len(set(names)) == len(names)


@pytest.mark.parametrize(
    "payload, reason",
    [
        (b"[" * 60_000, "nested too deeply"),
        (b'{"schema": 1, "accepted_at": NaN, "event": {}}', "accepted_at"),
        (b'{"schema": 1, "accepted_at": Infinity, "event": {}}', "accepted_at"),
    ],
)
def test_pathological_messages_are_refused_with_reason(payload, reason):
    with pytest.raises(MessageDecodeError) as info:
        decode_event(payload)
    assert reason in info.value.reason
