"""A user's recent behaviour sequence as the trainer publishes it for serving (saml/dupn).

Stored at ``StateKeys.user_sequence(user_id)`` (see ``schemas.state``), rewritten whole by
the trainer whenever the user's sequence changed, with a TTL. The value is compact JSON::

    {"v": 1, "steps": [[item_id, event_type, scenario, unix_seconds], ...]}

oldest step first, at most ``CELREC_SEQUENCE_LENGTH`` steps. Steps are the user's positive
events (a non-click is not a behaviour) in the order the trainer learnt them; each event is
learnt with the sequence as it was before it. Ids are external (strings) so a reader maps
them with its own id maps and never depends on the trainer's internal numbering.
"""

from __future__ import annotations

import json
from typing import NamedTuple

SEQUENCE_FORMAT = 1


class Step(NamedTuple):
    item_id: str
    event_type: str
    scenario: str
    time: float  # unix seconds of the event


class SequenceFormatError(ValueError):
    pass


def encode_sequence(steps: list[Step]) -> bytes:
    return json.dumps({"v": SEQUENCE_FORMAT, "steps": [list(s) for s in steps]},
                      separators=(",", ":")).encode("utf-8")


def decode_sequence(blob: bytes) -> list[Step]:
    """Inverse of :func:`encode_sequence`; raises SequenceFormatError on malformed input."""
    try:
        body = json.loads(blob)
        if body.get("v") != SEQUENCE_FORMAT:
            raise SequenceFormatError(f"unknown sequence format {body.get('v')!r}")
        return [Step(str(i), str(b), str(s), float(t)) for i, b, s, t in body["steps"]]
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise SequenceFormatError(f"bad sequence: {exc}") from None
