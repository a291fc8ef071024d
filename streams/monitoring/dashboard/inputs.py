"""Rows about what the models are fed: drift against the training reference, feature
freshness, data quality and volume, dead letters, and online/offline skew."""

from __future__ import annotations

from streams.monitoring.dashboard.panel import PIPELINE, RATE, Panel, Row, Target


def _psi_threshold(name: str) -> Target:
    """The spec's threshold (the recording rule rendered from ``monitoring.drift``)."""
    return Target(f"max(pipeline:streamscore_drift_psi:{name}_threshold{{{PIPELINE}}})", name)


DRIFT = Row(
    "Drift against the training reference",
    [
        Panel(
            "Columns above the alert threshold",
            "Input columns whose PSI in the last closed window is above the spec's"
            " monitoring.drift.alert (StreamscoreFeatureDrift's condition).",
            (
                Target(
                    "count(max by (pipeline, model, column)"
                    f" (streamscore_drift_psi{{{PIPELINE}}}) > on (pipeline) group_left ()"
                    " pipeline:streamscore_drift_psi:alert_threshold) or vector(0)"
                ),
            ),
            kind="stat",
            width=6,
            height=4,
            steps=((1, "red"),),
        ),
        Panel(
            "Highest column PSI, last window",
            "The most drifted input column's PSI in the last closed window, any model.",
            (Target(f"max(streamscore_drift_psi{{{PIPELINE}}})"),),
            kind="stat",
            width=6,
            height=4,
            steps=((0.1, "orange"), (0.25, "red")),
        ),
        Panel(
            "Score PSI, last window",
            "The primary's score distribution against its scores on the held-out training"
            " rows (StreamscoreScoreDrift above the alert threshold).",
            (Target(f"max(streamscore_drift_score_psi{{{PIPELINE}}})"),),
            kind="stat",
            width=6,
            height=4,
            steps=((0.1, "orange"), (0.25, "red")),
        ),
        Panel(
            "Drift windows closed (/min)",
            "Windows of monitoring.window closed per minute, all workers; 0 with traffic"
            " means no reference profile (see streamscore_drift_reference_available).",
            (Target(f"sum(rate(streamscore_drift_windows_total{{{PIPELINE}}}{RATE})) * 60"),),
            kind="stat",
            width=6,
            height=4,
        ),
        Panel(
            "PSI by input column",
            "Population stability index of each model input column in the last closed"
            " window (max across workers), with the spec's warn and alert thresholds.",
            (
                Target(
                    f"max by (model, column) (streamscore_drift_psi{{{PIPELINE}}})",
                    "{{model}} {{column}}",
                ),
                _psi_threshold("warn"),
                _psi_threshold("alert"),
            ),
            width=16,
        ),
        Panel(
            "PSI by column, now",
            "Each column's PSI in the last closed window, highest first.",
            (
                Target(
                    f"sort_desc(max by (column) (streamscore_drift_psi{{{PIPELINE}}}))",
                    "{{column}}",
                ),
            ),
            kind="bargauge",
            width=8,
            steps=((0.1, "orange"), (0.25, "red")),
        ),
        Panel(
            "Score PSI",
            "PSI of the primary's scores per closed window, with the thresholds.",
            (
                Target(
                    f"max by (model) (streamscore_drift_score_psi{{{PIPELINE}}})",
                    "{{model}}",
                ),
                _psi_threshold("warn"),
                _psi_threshold("alert"),
            ),
            width=24,
        ),
    ],
)

FRESHNESS = Row(
    "Feature freshness",
    [
        Panel(
            "Feature age at event time by view",
            "Event time minus the served row's timestamp, p50, p95 and p99 per feature"
            " view (streamscore_feature_age_seconds; rows the store lacked are not"
            " observed). Compare with features.max_age_seconds.",
            tuple(
                Target(
                    f"histogram_quantile({q}, sum by (le, view)"
                    f" (rate(streamscore_feature_age_seconds_bucket{{{PIPELINE}}}{RATE})))",
                    f"{{{{view}}}} p{round(q * 100)}",
                )
                for q in (0.5, 0.95, 0.99)
            ),
            unit="s",
        ),
        Panel(
            "Defaulted features by reason",
            "Feature values replaced by the spec's default per second: missing (the store"
            " had no row) or stale (older than features.max_age_seconds).",
            (
                Target(
                    f"sum by (reason) (rate(streamscore_defaulted_features_total{{{PIPELINE}}}"
                    f"{RATE}))",
                    "{{reason}}",
                ),
            ),
            stacked=True,
        ),
    ],
)

DEAD_LETTERS = Row(
    "Dead letters",
    [
        Panel(
            "Dead letters by reason",
            "Input events that became dead letters per second, by stage and reason.",
            (
                Target(
                    f"sum by (stage, reason) (rate(streamscore_dead_letters_total{{{PIPELINE}}}"
                    f"{RATE}))",
                    "{{stage}}/{{reason}}",
                ),
            ),
            stacked=True,
        ),
        Panel(
            "Dead-letter share of input",
            "Dead letters over input events (the dead-letter alert's ratio, per pipeline).",
            (
                Target(
                    f"sum by (pipeline) (rate(streamscore_dead_letters_total{{{PIPELINE}}}"
                    f"{RATE})) / sum by (pipeline) (rate(streamscore_events_total"
                    f"{{{PIPELINE}}}{RATE}))",
                    "{{pipeline}}",
                ),
            ),
            unit="percentunit",
        ),
    ],
)


def _quality(check: str, by: str = "column") -> Target:
    """Each column's share failing ``check`` in the last closed window (max across workers:
    each closes its own windows)."""
    matcher = f'check=~"{check}"' if "|" in check else f'check="{check}"'
    legend = " ".join(f"{{{{{label.strip()}}}}}" for label in by.split(","))
    return Target(
        f"max by ({by}) (streamscore_data_quality_ratio{{{PIPELINE}, {matcher}}})", legend
    )


def _volume(record: str, legend: str, times: str = "") -> Target:
    """A volume recording rule (labelled by pipeline only), or the baseline ``times`` one of
    the spec's monitoring.volume ratios."""
    expr = f"pipeline:streamscore_events:{record}{{{PIPELINE}}}"
    if times:
        expr = f"pipeline:streamscore_events:{times}{{{PIPELINE}}} * {expr}"
    return Target(expr, f"{{{{pipeline}}}} {legend}")


DATA_QUALITY = Row(
    "Data quality and volume",
    [
        Panel(
            "Missing share by column",
            "Share of each model input column's values in the last closed window that were"
            " missing: a defaulted feature or an absent optional event field.",
            (_quality("missing"),),
            unit="percentunit",
            width=8,
        ),
        Panel(
            "At the declared min or max",
            "Share of each column's values in the last closed window at the event schema's"
            " declared bound (a clipped or saturated source shows here).",
            (_quality("at_min|at_max", by="column, check"),),
            unit="percentunit",
            width=8,
        ),
        Panel(
            "Unknown categories",
            "Input events dead-lettered for a category value the schema does not declare, by"
            " field, as a share of all input events in the last closed window.",
            (_quality("unknown"),),
            unit="percentunit",
            width=8,
        ),
        Panel(
            "Events/s against the baseline",
            "Input rate over 10 minutes, its baseline (the median of the same 10 minutes on"
            " the previous 7 days) and the band between monitoring.volume.drop and .spike"
            " times the baseline: StreamscoreVolumeDrop/Spike after 15 minutes outside it.",
            (
                _volume("rate10m", "rate"),
                _volume("rate_baseline", "baseline"),
                _volume("rate_baseline", "drop below", times="volume_drop_ratio"),
                _volume("rate_baseline", "spike above", times="volume_spike_ratio"),
            ),
            width=12,
        ),
        Panel(
            "Days of volume history",
            "Previous days (of 7) with a rate at this time of day; under 3 the baseline is"
            " the rate itself and the volume alerts cannot fire.",
            (Target(f"min(pipeline:streamscore_events:baseline_days{{{PIPELINE}}})"),),
            kind="stat",
            width=4,
            base_colour="orange",
            steps=((3, "green"),),
        ),
        Panel(
            "Monitoring stages p99",
            "99th percentile of a micro-batch's time in the quality and drift stages: what"
            " the monitors cost the scoring path.",
            (
                Target(
                    "histogram_quantile(0.99, sum by (stage, le)"
                    f" (rate(streamscore_stage_duration_seconds_bucket{{{PIPELINE},"
                    f' stage=~"quality|drift"}}{RATE})))',
                    "{{stage}} p99",
                ),
            ),
            unit="s",
            width=8,
        ),
    ],
)


SKEW = Row(
    "Online/offline skew",
    [
        Panel(
            "Skew checks/s",
            "Sampled labelled predictions whose served features were compared with Feast's"
            " offline point-in-time values, per second (monitoring.skew.sample_rate).",
            (
                Target(
                    f"sum by (pipeline) (rate(streamscore_skew_checked_total{{{PIPELINE}}}{RATE}))",
                    "{{pipeline}}",
                ),
            ),
            width=12,
        ),
        Panel(
            "Unchecked samples by reason",
            "Sampled predictions left unchecked per second: busy (max_in_flight lookups"
            " pending), failed (the offline read failed; logged), no_key (stored by a worker"
            " with the check off).",
            (
                Target(
                    f"sum by (reason) (rate(streamscore_skew_unchecked_total{{{PIPELINE}}}{RATE}))",
                    "{{reason}}",
                ),
            ),
            stacked=True,
            width=12,
        ),
        Panel(
            "Mismatch share by feature",
            "Share of the checks over 15 minutes where the feature differed from its offline"
            " value beyond monitoring.skew.tolerance (StreamscoreFeatureSkew fires on one).",
            (
                Target(
                    "sum by (pipeline, feature) (rate(streamscore_skew_mismatched_total"
                    f"{{{PIPELINE}}}[15m])) / ignoring (feature) group_left"
                    " sum by (pipeline) (rate(streamscore_skew_checked_total"
                    f"{{{PIPELINE}}}[15m]))",
                    "{{feature}}",
                ),
            ),
            unit="percentunit",
            width=12,
        ),
        Panel(
            "Largest |online - offline| by feature",
            "Each feature's largest absolute difference over the checks of the last"
            " monitoring.skew.window_seconds; 0 when every checked value matched.",
            (
                Target(
                    f"max by (feature) (streamscore_skew_max_abs_difference{{{PIPELINE}}})",
                    "{{feature}}",
                ),
            ),
            width=12,
        ),
    ],
)
