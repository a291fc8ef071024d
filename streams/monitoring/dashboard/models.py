"""Rows about how the models do: estimated and realized performance and concept drift, per
slice value, and the models in play (challenger, canary) with the actions taken on them."""

from __future__ import annotations

from streams.monitoring.dashboard.panel import PIPELINE, PRIMARY, RATE, Panel, Row, Target


def _gauge(metric: str, legend: str = "{{model}}", by: str = "pipeline, model") -> Target:
    """A per-model gauge, max across workers (a standby exports what it last knew)."""
    return Target(f"max by ({by}) ({metric}{{{PIPELINE}}})", legend)


def _accuracy(models: str | None, legend: str = "{{model}}") -> Target:
    """Accuracy on labelled events of the scores each model served: the primary's
    (``models`` None) or that of the models whose name matches ``models``."""
    if models is None:
        selector = f'streamscore_online_metric{{{PIPELINE}, metric="accuracy"}} {PRIMARY}'
    else:
        selector = f'streamscore_online_metric{{{PIPELINE}, model=~"{models}", metric="accuracy"}}'
    return Target(f"max by (pipeline, model) ({selector})", legend)


def _slice_metric(metric: str) -> str:
    """The primary's ``metric`` per slice value (every model has one: shadows, arms)."""
    return (
        "max by (pipeline, model, slice, value) (streamscore_slice_online_metric"
        f'{{{PIPELINE}, metric="{metric}"}} {PRIMARY})'
    )


SLICE = "{{slice}}={{value}}"

PERFORMANCE = Row(
    "Performance: estimated, realized, concept drift",
    [
        Panel(
            "Estimated and realized accuracy",
            "The primary's accuracy expected from its scores alone (last closed monitoring"
            " window) and realized on the labels of the latest window of prediction time"
            " with monitoring.performance.min_labels labels (it trails: labels come late).",
            (
                _gauge("streamscore_estimated_accuracy", "{{model}} estimated"),
                _gauge("streamscore_realized_accuracy", "{{model}} realized"),
            ),
            unit="percentunit",
        ),
        Panel(
            "Estimated minus realized accuracy",
            "On the realized window's labelled predictions, the label-free estimate minus the"
            " realized accuracy: above 0 the scores are overconfident (calibration broke).",
            (_gauge("streamscore_estimated_minus_realized_accuracy"),),
            unit="percentunit",
        ),
        Panel(
            "Age of the realized window",
            "Time since the start of the window of prediction time the realized accuracy is"
            " of: label delay plus the window; growing without bound means labels stopped.",
            (
                Target(
                    "time() - max by (pipeline, model)"
                    " (streamscore_realized_accuracy_window_start_timestamp_seconds"
                    f"{{{PIPELINE}}})",
                    "{{model}}",
                ),
            ),
            unit="s",
            width=8,
        ),
        Panel(
            "Concept drift detections",
            "Changes ADWIN found in each model's labelled error stream, by direction (worse"
            " is StreamscoreConceptDrift; better is an online model learning, say).",
            (
                Target(
                    "sum by (model, direction) (increase("
                    f"streamscore_concept_drift_detections_total{{{PIPELINE}}}{RATE}))",
                    "{{model}} {{direction}}",
                ),
            ),
            stacked=True,
            width=8,
        ),
        Panel(
            "ADWIN error mean",
            "Each model's mean error in ADWIN's current window (the labels since its last"
            " detected change): error rate, or mean absolute error for regression.",
            (_gauge("streamscore_concept_drift_error_mean", by="model"),),
            width=8,
        ),
    ],
)

SLICES = Row(
    "Slices",
    [
        Panel(
            "Score PSI by slice value",
            "PSI of the primary's scores on each slice value's events in the last closed"
            " drift window, against its whole held-out score distribution (absent under 100"
            " events; a slice that always differed shows a constant offset).",
            (Target(f"max by (slice, value) (streamscore_slice_score_psi{{{PIPELINE}}})", SLICE),),
        ),
        Panel(
            "Score PSI change over 1h",
            "How much each slice value's score PSI moved over the last hour: a slice"
            " drifting now, rather than one that always differed.",
            (
                Target(
                    f"max by (slice, value) (delta(streamscore_slice_score_psi{{{PIPELINE}}}[1h]))",
                    SLICE,
                ),
            ),
        ),
        Panel(
            "Served accuracy by slice value",
            "The primary's accuracy on the latest labelled events of each slice value (the"
            " same window size as its overall figure).",
            (Target(_slice_metric("accuracy"), SLICE),),
            unit="percentunit",
            width=8,
        ),
        Panel(
            "Slice accuracy minus overall",
            "Each slice value's served accuracy minus the primary's overall accuracy: the"
            " segment that got worse goes below 0, the others stay put.",
            (
                Target(
                    f"{_slice_metric('accuracy')} - on (pipeline, model) group_left ()"
                    " max by (pipeline, model) (streamscore_online_metric{"
                    f'{PIPELINE}, metric="accuracy"}})',
                    SLICE,
                ),
            ),
            unit="percentunit",
            width=8,
        ),
        Panel(
            "Labels in each slice's window",
            "Labelled events behind each slice value's figures (at most the window size): a"
            " small count makes a noisy accuracy.",
            (Target(_slice_metric("window_count"), SLICE),),
            width=8,
        ),
    ],
)

MODELS_AND_ACTIONS = Row(
    "Models and actions",
    [
        Panel(
            "Challenger version",
            "The registry version the challenger alias names, scored in shadow as"
            " '<model>@challenger' (no data while no challenger is set).",
            (
                Target(
                    "max by (pipeline, model, version)"
                    f' (streamscore_model_info{{{PIPELINE}, role="challenger"}})',
                    "{{model}} v{{version}}",
                ),
            ),
            kind="stat",
            width=8,
            height=4,
            text_mode="name",
        ),
        Panel(
            "Canary version",
            "The version serving the canary's share of entity keys (model.canary); 0 while"
            " none does (its alias unset, or removed by a rollback).",
            (_gauge("streamscore_canary_version"),),
            kind="stat",
            width=8,
            height=4,
        ),
        Panel(
            "Canary share of predictions",
            "The canary's predictions over all of the primary's, over 5 minutes: near"
            " model.canary.share while a canary serves, 0 otherwise.",
            (
                Target(
                    "sum by (pipeline, model) (rate(streamscore_canary_predictions_total"
                    f"{{{PIPELINE}}}[5m])) / sum by (pipeline, model)"
                    f" (rate(streamscore_predictions_total{{{PIPELINE}}}[5m]))",
                    "{{model}}",
                ),
            ),
            kind="stat",
            unit="percentunit",
            width=8,
            height=4,
        ),
        Panel(
            "Champion and challenger, labelled accuracy",
            "Accuracy on labelled events of the scores each served: the primary (the"
            " champion) and '<model>@challenger' while a challenger is shadowed.",
            (_accuracy(None), _accuracy(".+@challenger")),
            unit="percentunit",
        ),
        Panel(
            "Canary and primary, labelled accuracy",
            "Accuracy of each arm on the events it served: '<model>@canary' on its share of"
            " entity keys, the primary on the rest (no canary line while none serves).",
            (_accuracy(".+@canary"), _accuracy(None)),
            unit="percentunit",
        ),
        Panel(
            "Actions in the last hour",
            "Records on the pipeline's actions topic over the last hour, by action"
            " (promotion, refusal, rollback, ...); `streamscore models history NAME` lists"
            " them.",
            (
                Target(
                    "max by (pipeline, action)"
                    f" (increase(streamscore_actions_total{{{PIPELINE}}}[1h]))",
                    "{{pipeline}} {{action}}",
                ),
            ),
            width=24,
        ),
    ],
)
