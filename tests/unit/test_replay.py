"""Dead-letter replay's decisions, without a broker: which dead letters go back, where, under
which id, and which are skipped (tests/integration/test_replay.py runs it on real workers)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from pydantic import SecretStr

from streams.cli.replay import (
    ALREADY_REPLAYED,
    NO_ORIGINAL,
    NOT_SELECTED,
    REPLAYED,
    STILL_INVALID,
    TRUNCATED,
    UNREADABLE,
    Decision,
    ReplaySelector,
    Resend,
    parse_since,
)
from streams.cli.replay_run import ReplayReport, to_resend
from streams.errors import ReplayError
from streams.scoring.limits import InputLimits
from streams.scoring.privacy import NO_PRIVACY, Privacy
from streams.scoring.records import InputMessage, encode_dead_letter, iso_utc
from streams.spec import PipelineSpec, load_spec_text

SPEC = """
name: replayed
input: {topic: events}
event:
  id_field: id
  fields:
    id: {type: string}
    user: {type: string}
    amount: {type: float, min: 0}
    channel: {type: category, values: %s}
entity: {field: user, join_key: user_id}
features: {repo: repo, refs: ["s:f"], defaults: {"s:f": 0.0}}
model_input: [{event: amount}]
model: {name: m}
labels: {topic: labels, window_seconds: 600}
output: {topic: scores, dead_letter_topic: dlq}
"""
OLD = load_spec_text(SPEC % "[web]", base_dir=Path("/tmp"))
FIXED = load_spec_text(SPEC % "[web, app]", base_dir=Path("/tmp"))
NOW = 1_700_000_000.0


def event(event_id: str = "e1", channel: str = "app", **changes: object) -> bytes:
    body = {"id": event_id, "user": "u1", "amount": 3.0, "channel": channel}
    return orjson.dumps({**body, **changes})


def dead_letter(
    value: bytes | None,
    *,
    key: bytes | None = b"k1",
    stage: str = "decode",
    reason: str = "unknown_category",
    pipeline: str = "replayed",
    at: float = NOW,
    offset: int = 7,
    keep_original: bool = True,
) -> bytes:
    topic = "labels" if stage == "label" else "events"
    return encode_dead_letter(
        InputMessage(key, value, topic, 2, offset, NOW - 1),
        pipeline=pipeline, stage=stage, reason=reason, error="e", at=at,
        keep_original=keep_original,
    )  # fmt: skip


def selector(spec: PipelineSpec = FIXED, **options: object) -> ReplaySelector:
    return ReplaySelector(spec, InputLimits(), NO_PRIVACY, **options)  # type: ignore[arg-type]


def test_a_dead_letter_the_fixed_spec_accepts_goes_back_as_it_came() -> None:
    record = dead_letter(event("e1"))
    assert selector().decide(record, NOW) == Decision(
        REPLAYED, Resend("events", b"k1", event("e1"), "event:e1")
    )
    # The spec as it was still rejects it: resending would only dead-letter it again.
    assert selector(OLD).decide(record, NOW) == Decision(STILL_INVALID, reason="unknown_category")


def test_an_encode_dead_letter_is_an_event_too() -> None:
    decision = selector().decide(dead_letter(event("e2"), stage="encode"), NOW)
    assert decision.outcome == REPLAYED and decision.resend is not None
    assert decision.resend.topic == "events"


def test_force_resends_what_is_still_invalid_under_its_source_position() -> None:
    decision = selector(OLD, force=True).decide(dead_letter(event("e1")), NOW)
    assert decision.outcome == REPLAYED and decision.reason == "unknown_category"
    assert decision.resend == Resend("events", b"k1", event("e1"), "source:events/2/7")


def test_a_truncated_original_is_never_resent() -> None:
    value = event("e1", note="x" * 2000)
    record = dead_letter(value, reason="too_large")  # keeps its first KiB
    assert orjson.loads(record)["original_value_truncated"] is True
    assert selector().decide(record, NOW).outcome == TRUNCATED
    assert selector(force=True).decide(record, NOW).outcome == TRUNCATED


def test_a_too_large_key_fits_again_after_the_limit_was_raised() -> None:
    """A dead letter keeps a too_large message's first KiB: a 600-byte key is whole."""
    record = dead_letter(event("e1", channel="web"), key=b"K" * 600, reason="too_large")
    assert selector().decide(record, NOW) == Decision(STILL_INVALID, reason="too_large")
    raised = ReplaySelector(FIXED, InputLimits(max_key_bytes=1024), NO_PRIVACY)
    assert raised.decide(record, NOW).outcome == REPLAYED


def test_a_dead_letter_without_its_original_cannot_be_resent() -> None:
    dropped = dead_letter(event("e1"), keep_original=False)
    assert selector(force=True).decide(dropped, NOW).outcome == NO_ORIGINAL
    tombstone = dead_letter(None, reason="not_json")
    assert selector(force=True).decide(tombstone, NOW).outcome == NO_ORIGINAL


def test_a_label_dead_letter_goes_back_to_the_labels_topic() -> None:
    label = orjson.dumps({"event_id": "e1", "label": 1})
    record = dead_letter(label, stage="label", reason="too_large")
    assert selector().decide(record, NOW) == Decision(
        REPLAYED, Resend("labels", b"k1", label, "label:e1")
    )
    bad = dead_letter(b'{"event_id": "e1", "label": 7}', stage="label", reason="wrong_type")
    assert selector().decide(bad, NOW) == Decision(STILL_INVALID, reason="wrong_type")
    unlabelled = FIXED.model_copy(update={"labels": None})
    assert selector(unlabelled).decide(record, NOW) == Decision(
        STILL_INVALID, reason="no_labels_topic"
    )


def test_reason_since_and_pipeline_select() -> None:
    record = dead_letter(event("e1"), at=NOW)
    assert selector(reasons=["out_of_range"]).decide(record, NOW).outcome == NOT_SELECTED
    assert selector(reasons=["out_of_range", "unknown_category"]).decide(record, NOW).outcome == (
        REPLAYED
    )
    assert selector(since=NOW + 1).decide(record, NOW).outcome == NOT_SELECTED
    assert selector(since=NOW).decide(record, NOW).outcome == REPLAYED
    other = dead_letter(event("e1"), pipeline="another")
    assert selector().decide(other, NOW).outcome == NOT_SELECTED


@pytest.mark.parametrize(
    "record",
    [
        b"not json",
        b"[1, 2]",
        b"{}",
        None,
        orjson.dumps({**orjson.loads(dead_letter(event())), "dead_lettered_at": "yesterday"}),
        orjson.dumps({**orjson.loads(dead_letter(event())), "source": "events"}),
        orjson.dumps({**orjson.loads(dead_letter(event())), "original_value_b64": "!!"}),
        orjson.dumps({**orjson.loads(dead_letter(event())), "stage": "enrich"}),
    ],
)
def test_what_is_not_a_dead_letter_is_unreadable(record: bytes | None) -> None:
    assert selector(force=True).decide(record, NOW).outcome == UNREADABLE


def test_under_privacy_the_replay_id_is_the_hashed_id() -> None:
    spec = load_spec_text(SPEC % "[web, app]" + "privacy: {hash: [id]}\n", base_dir=Path("/tmp"))
    privacy = Privacy.for_pipeline(spec, SecretStr("replay-key-0123456789"))
    decision = ReplaySelector(spec, InputLimits(), privacy).decide(dead_letter(event("e1")), NOW)
    assert decision.resend is not None
    assert decision.resend.identity == f"event:{privacy.event_id('e1')}"


def candidate(identity: str) -> Decision:
    return Decision(REPLAYED, Resend("events", None, b"{}", identity))


def test_the_replay_log_and_the_run_itself_resend_an_id_once() -> None:
    decisions = [
        candidate("event:a"),
        candidate("event:b"),
        Decision(TRUNCATED),
        candidate("event:a"),  # the same event dead-lettered twice
        candidate("label:a"),  # its label is another thing
    ]
    seen: set[str] = set()
    out = to_resend(decisions, {"event:b"}, seen, force=False)
    assert [d.outcome for d in out] == [
        REPLAYED, ALREADY_REPLAYED, TRUNCATED, ALREADY_REPLAYED, REPLAYED,
    ]  # fmt: skip
    # A second run, with the log holding what the first one sent: nothing.
    again = to_resend(decisions, {"event:a", "event:b", "label:a"}, set(), force=False)
    assert all(d.outcome != REPLAYED for d in again)
    # --force ignores the log, never the run's own duplicates.
    forced = to_resend(decisions, {"event:a", "event:b", "label:a"}, set(), force=True)
    assert [d.outcome for d in forced] == [
        REPLAYED, REPLAYED, TRUNCATED, ALREADY_REPLAYED, REPLAYED,
    ]  # fmt: skip


def test_the_report_counts_outcomes_and_still_invalid_reasons() -> None:
    report = ReplayReport("dlq", dry_run=True, total=4)
    for decision in [
        candidate("event:a"),
        Decision(STILL_INVALID, reason="unknown_category"),
        Decision(STILL_INVALID, reason="unknown_category"),
        Decision(TRUNCATED),
    ]:
        report.count(decision)
    assert report.outcomes[REPLAYED] == 1 and report.still_invalid == {"unknown_category": 2}
    assert report.progress_line() == (
        "dlq replay dlq: 4/4 dead letters read, 1 would replay, 2 still invalid,"
        " 0 already replayed, 1 truncated"
    )


def test_since_takes_a_time_or_a_duration() -> None:
    assert parse_since("2h", now=NOW) == NOW - 7200
    assert parse_since("1.5d", now=NOW) == NOW - 1.5 * 86400
    assert parse_since(iso_utc(NOW), now=0.0) == NOW
    assert parse_since("2023-11-14T22:13:20", now=0.0) == NOW  # naive: UTC
    with pytest.raises(ReplayError, match="--since 'soon'"):
        parse_since("soon", now=NOW)
