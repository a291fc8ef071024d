"""The fault suite's own arithmetic and inputs (the suite itself is `make faults`)."""

from __future__ import annotations

import json

from load_tests.faults.fuzz import fuzzed_events, keyed, malformed_labels
from load_tests.faults.report import markdown
from load_tests.faults.scenarios import Outcome, _recovery
from load_tests.traffic import ID_SPACE
from tests.unit.test_pipeline import SPEC


def test_recovery_counts_until_the_backlog_is_back_for_good() -> None:
    fault_end = 10.0
    samples = [(9.0, 0), (10.0, 10), (11.0, 900), (12.0, 80), (13.0, 700), (14.0, 50), (15.0, 0)]
    assert _recovery(samples, fault_end, rate=500) == 4.0  # over at 11 and 13, back at 14
    assert _recovery([(10.5, 0), (11.0, 100)], fault_end, rate=500) == 0.0
    assert _recovery([(11.0, 900)], fault_end, rate=500) is None  # never came back
    assert _recovery(samples, None, rate=500) is None  # no fault was injected


def test_fuzzed_events_are_deterministic_varied_and_keyed_for_the_meter() -> None:
    first, again = fuzzed_events(SPEC, 300), fuzzed_events(SPEC, 300)
    assert len(first) == 300
    assert [repr(m) for m in first] == [repr(m) for m in again]
    assert any(isinstance(m, bytes) for m in first) and any(isinstance(m, dict) for m in first)
    messages = keyed(SPEC, 7, first)
    for seq, (key, value) in enumerate(messages):
        assert divmod(int(key), ID_SPACE) == (7, seq)
        if isinstance(first[seq], dict):
            assert json.loads(value)[SPEC.event.id_field] == key.decode()


def test_malformed_labels_are_bytes() -> None:
    labels = malformed_labels(200)
    assert len(labels) == 200 and all(isinstance(v, bytes) for v in labels)


def test_markdown_table_has_a_row_per_scenario() -> None:
    row = Outcome("kill -9", 10, 9, 1, 0, 2, 3.5, ["scoring worker exit -9"], "note")
    text = markdown([row, row])
    assert text.count("| kill -9 | 10 | 9 | 1 | 0 | 2 | 3.5 | scoring worker exit -9 |") == 2
