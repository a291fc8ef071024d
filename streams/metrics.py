"""Every Prometheus metric streamscore exports, declared in one place.

Metrics live on an injectable ``CollectorRegistry`` (tests make their own and read values
back with ``registry.get_sample_value``). Every series carries the ``pipeline`` label: the
spec's stable name, also used in logs and error messages.

Buckets are chosen for this workload: per-batch stage times from ~50 µs to seconds, and
end-to-end latencies from 1 ms to 30 s.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import numpy as np
import numpy.typing as npt
import orjson
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    make_wsgi_app,
    values,
)
from prometheus_client.exposition import ThreadingWSGIServer

# Importing the Feast SDK sets PROMETHEUS_MULTIPROC_DIR (for Feast's pre-forked feature
# server), and prometheus_client then backs every metric created afterwards with a file in
# that folder: each inc/observe takes a lock and writes through mmap (2% of a loaded worker's
# CPU, measured). A worker is one process serving its own /metrics: plain in-memory values.
values.ValueClass = values.MutexValue

STAGE_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5,
)  # fmt: skip
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
SCORE_DIFF_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
STALE_LABEL_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000, 20000)
DELAY_BUCKETS = (0.1, 0.5, 1, 5, 15, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
#: Feature rows from seconds old (streamed) to weeks (daily batches that stopped).
AGE_BUCKETS = (
    1, 10, 60, 300, 900, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86_400, 2 * 86_400, 7 * 86_400,
    30 * 86_400,
)  # fmt: skip
#: Why a feature value was replaced by the spec's default.
DEFAULTED_REASONS = ("missing", "stale")

#: Stage names, stable across logs, metric labels and dead-letter records.
STAGES = ("decode", "enrich", "infer", "drift", "quality", "publish")


class Metrics:
    """The metric families of one worker process."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes

        # --- the scoring path -------------------------------------------------------------
        self.events = Counter(
            "streamscore_events_total", "Input messages taken from the input topic.",
            ["pipeline"], registry=r,
        )  # fmt: skip
        self.predictions = Counter(
            "streamscore_predictions_total", "Prediction records published, by model.",
            ["pipeline", "model"], registry=r,
        )  # fmt: skip
        self.dead_letters = Counter(
            "streamscore_dead_letters_total",
            "Input messages sent to the dead-letter topic, by stage and reason.",
            ["pipeline", "stage", "reason"], registry=r,
        )  # fmt: skip
        self.stage_seconds = Histogram(
            "streamscore_stage_duration_seconds",
            "Time one micro-batch spends in a stage (decode, enrich, infer, drift, quality,"
            " publish).",
            ["pipeline", "stage"], buckets=STAGE_BUCKETS, registry=r,
        )  # fmt: skip
        self.inference_seconds = Histogram(
            "streamscore_inference_duration_seconds",
            "Time of one model run over a micro-batch, by model and role.",
            ["pipeline", "model", "role"], buckets=STAGE_BUCKETS, registry=r,
        )  # fmt: skip
        self.end_to_end_seconds = Histogram(
            "streamscore_end_to_end_latency_seconds",
            "Per event: from event time to its prediction being acknowledged by Kafka.",
            ["pipeline"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.batch_size = Histogram(
            "streamscore_batch_size_events", "Events per micro-batch.",
            ["pipeline"], buckets=BATCH_SIZE_BUCKETS, registry=r,
        )  # fmt: skip
        self.batch_wait_seconds = Histogram(
            "streamscore_batch_wait_seconds",
            "Time the agent waited for a micro-batch to fill (between batches).",
            ["pipeline"], buckets=STAGE_BUCKETS, registry=r,
        )  # fmt: skip
        self.feature_misses = Counter(
            "streamscore_feature_store_misses_total",
            "Events whose entity the online store did not know (scored with defaults).",
            ["pipeline"], registry=r,
        )  # fmt: skip
        self.defaulted_features = Counter(
            "streamscore_defaulted_features_total",
            "Feature values replaced by the spec's default, by feature and reason: missing"
            " (the store had none) or stale (older than features.max_age_seconds).",
            ["pipeline", "feature", "reason"], registry=r,
        )  # fmt: skip
        self.feature_age_seconds = Histogram(
            "streamscore_feature_age_seconds",
            "Per event and feature view: event time minus the event timestamp of the view's"
            " row served (rows the store did not have are not observed; stale ones are).",
            ["pipeline", "view"], buckets=AGE_BUCKETS, registry=r,
        )  # fmt: skip
        self.consumer_lag = Gauge(
            "streamscore_consumer_lag_messages",
            "Messages between the partition's high watermark and the worker's position.",
            ["pipeline", "topic", "partition"], registry=r,
        )  # fmt: skip
        self.assigned_partitions = Gauge(
            "streamscore_assigned_partitions",
            "Partitions of its input this worker owns (the events topic; the labels topic for"
            " a learning worker); above 0 once it has joined its group.",
            ["pipeline"], registry=r,
        )  # fmt: skip
        self.model_info = Gauge(
            "streamscore_model_info", "Models loaded by this worker (value 1), by role.",
            ["pipeline", "role", "model", "version"], registry=r,
        )  # fmt: skip
        self.model_refused_version = Gauge(
            "streamscore_model_refused_version",
            "Version the model's alias points at that this worker refused to serve (it does"
            " not load or does not fit the spec; it serves an earlier one); 0 while it"
            " serves the alias's version.",
            ["pipeline", "model", "alias"], registry=r,
        )  # fmt: skip
        self.model_refusals = Counter(
            "streamscore_model_refusals_total",
            "Model versions this worker refused to serve, by reason (missing, damaged,"
            " unloadable, width, columns); each version counted once.",
            ["pipeline", "model", "alias", "reason"], registry=r,
        )  # fmt: skip

        # --- drift against the primary's training reference (streams/monitoring/drift.py) -
        self.drift_psi = Gauge(
            "streamscore_drift_psi",
            "Population stability index of a model input column (a one-hot group is one"
            " column) in the last closed window, against the primary's training reference.",
            ["pipeline", "model", "column"], registry=r,
        )  # fmt: skip
        self.drift_score_psi = Gauge(
            "streamscore_drift_score_psi",
            "Population stability index of the primary's scores in the last closed window,"
            " against its scores on the held-out training rows.",
            ["pipeline", "model"], registry=r,
        )  # fmt: skip
        self.drift_windows = Counter(
            "streamscore_drift_windows_total",
            "Drift windows closed (each sets the PSI gauges and writes a monitoring record).",
            ["pipeline", "model"], registry=r,
        )  # fmt: skip
        self.drift_reference = Gauge(
            "streamscore_drift_reference_available",
            "1 when the primary's served version has a training reference profile (drift is"
            " measured), 0 when not (registered before profiles: no PSI series).",
            ["pipeline", "model"], registry=r,
        )  # fmt: skip

        # --- data quality per model input column (streams/monitoring/quality.py) ----------
        self.data_quality = Gauge(
            "streamscore_data_quality_ratio",
            "Share of a model input column's values in the last closed window failing a"
            " check: missing (a defaulted feature, an absent optional event field), at_min /"
            " at_max (at the event schema's declared bound), unknown (input events"
            " dead-lettered for an unknown category of the field, of all input events).",
            ["pipeline", "column", "check"], registry=r,
        )  # fmt: skip
        self.data_quality_windows = Counter(
            "streamscore_data_quality_windows_total",
            "Data quality windows closed (each sets the ratios and writes a monitoring record).",
            ["pipeline"], registry=r,
        )  # fmt: skip

        # --- slices: monitoring.slices (streams/monitoring/slices.py) ----------------------
        # ``slice`` is a spec's slice field, ``value`` one of its declared categories,
        # true/false, or (none): bounded by the spec.
        self.slice_score_psi = Gauge(
            "streamscore_slice_score_psi",
            "Population stability index of the primary's scores on one slice value's events"
            " in the last closed drift window, against the primary's whole held-out score"
            " distribution (a slice that always differed shows a constant offset); absent"
            " for a value with fewer than 100 events in the window.",
            ["pipeline", "model", "slice", "value"], registry=r,
        )  # fmt: skip
        self.slice_online_metric = Gauge(
            "streamscore_slice_online_metric",
            "streamscore_online_metric on the labelled events of one slice value only (the"
            " last labelled events of that value, same window size), by model.",
            ["pipeline", "model", "slice", "value", "metric"], registry=r,
        )  # fmt: skip

        # --- shadows ----------------------------------------------------------------------
        self.shadow_agreement = Gauge(
            "streamscore_shadow_agreement_ratio",
            "Share of decisions the shadow agrees with the primary on (sliding window);"
            " absent for a regression pipeline (no decisions).",
            ["pipeline", "model"], registry=r,
        )  # fmt: skip
        self.shadow_score_diff = Histogram(
            "streamscore_shadow_score_difference",
            "Absolute difference between shadow and primary scores, per event.",
            ["pipeline", "model"], buckets=SCORE_DIFF_BUCKETS, registry=r,
        )  # fmt: skip
        self.shadow_changed = Counter(
            "streamscore_shadow_changed_decisions_total",
            "Events where the shadow's decision differs from the primary's (classification).",
            ["pipeline", "model"], registry=r,
        )  # fmt: skip
        self.shadow_shed = Counter(
            "streamscore_shadow_shed_events_total",
            "Events a shadow skipped because it fell behind (the primary never waits).",
            ["pipeline", "model"], registry=r,
        )  # fmt: skip
        self.shadow_errors = Counter(
            "streamscore_shadow_errors_total",
            "Events a shadow failed to score (it raised); the primary is unaffected.",
            ["pipeline", "model"], registry=r,
        )  # fmt: skip
        self.shadow_backlog = Gauge(
            "streamscore_shadow_backlog_events", "Events queued for a shadow, not yet scored.",
            ["pipeline", "model"], registry=r,
        )  # fmt: skip

        self.redis_retries = Counter(
            "streamscore_redis_retries_total",
            "Redis calls retried after a transient failure (Redis restarting or unreachable),"
            " by stage: enrich (feature read), label (prediction-store read), learn (learner).",
            ["pipeline", "stage"], registry=r,
        )  # fmt: skip

        # --- labels and online learning ---------------------------------------------------
        self.labels = Counter(
            "streamscore_labels_total",
            "Label messages by outcome (joined, late, orphan, duplicate, invalid).",
            ["pipeline", "outcome"], registry=r,
        )  # fmt: skip
        self.labels_held = Gauge(
            "streamscore_labels_held",
            "Labels whose prediction is not stored yet, joined again until the spec's"
            " labels.orphan_grace_seconds (then orphans).",
            ["pipeline"], registry=r,
        )  # fmt: skip
        self.label_delay_seconds = Histogram(
            "streamscore_label_delay_seconds", "From prediction to its label's arrival.",
            ["pipeline"], buckets=DELAY_BUCKETS, registry=r,
        )  # fmt: skip
        self.label_coverage = Gauge(
            "streamscore_label_join_coverage_ratio",
            "Share of predictions whose label window closed that got a label.",
            ["pipeline"], registry=r,
        )  # fmt: skip
        self.online_metric = Gauge(
            "streamscore_online_metric",
            "Rolling metric on labelled events (classification: accuracy, log_loss, roc_auc;"
            " regression: mae, rmse; both: window_count), by model, from the scores each"
            " model published for them (served): the figure to compare on.",
            ["pipeline", "model", "metric"], registry=r,
        )  # fmt: skip
        self.online_as_learned_metric = Gauge(
            "streamscore_online_as_learned_metric",
            "The online model's rolling metric (as streamscore_online_metric's) scored by the"
            " learner itself just before learning each label (progressive validation, no"
            " serving staleness): not what it served; never compare models on it.",
            ["pipeline", "model", "metric"], registry=r,
        )  # fmt: skip
        self.online_labels_behind = Histogram(
            "streamscore_online_labels_behind",
            "Per online-shadow prediction: labels the labels consumer had joined and handed"
            " to the learner that the snapshot it was scored with had not yet taken in.",
            ["pipeline", "model"], buckets=STALE_LABEL_BUCKETS, registry=r,
        )  # fmt: skip
        self.online_snapshot_age_seconds = Histogram(
            "streamscore_online_snapshot_age_seconds",
            "Per online-shadow prediction: time since the learner wrote the snapshot it was"
            " scored with (the learner's clock against the scoring worker's).",
            ["pipeline", "model"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.online_learned = Counter(
            "streamscore_online_learned_total", "Labelled events the online model learned.",
            ["pipeline", "model"], registry=r,
        )  # fmt: skip
        # Canary (spec model.canary): which version serves the canary's share, and how much.
        self.canary_version = Gauge(
            "streamscore_canary_version",
            "The version serving the canary's share of entity keys; 0 while none does (its"
            " alias absent or removed by a rollback).",
            ["pipeline", "model"], registry=r,
        )  # fmt: skip
        self.canary_errors = Counter(
            "streamscore_canary_errors_total",
            "Batches whose canary rows the canary failed to score: the primary served them,"
            " and the worker stopped routing to that version until its alias moves.",
            ["pipeline", "model"], registry=r,
        )  # fmt: skip
        self.canary_predictions = Counter(
            "streamscore_canary_predictions_total",
            "Prediction records the canary served (also in streamscore_predictions_total).",
            ["pipeline", "model"], registry=r,
        )  # fmt: skip

        # --- actions (streams/actions/) ---------------------------------------------------
        self.actions = Counter(
            "streamscore_actions_total",
            "Records on the pipeline's actions topic since this learning worker started, by"
            " action: promotion, refusal, rollback (other: anything else).",
            ["pipeline", "action"], registry=r,
        )  # fmt: skip
        # --- the guard: automatic rollback (streams/actions/guard.py, rollback.py) ---------
        self.guard_watched_version = Gauge(
            "streamscore_guard_watched_version",
            "The version the learner's guard watches, by watch (canary: the canary's version;"
            " promotion: the version the primary's alias moved to, until judged); 0: none.",
            ["pipeline", "model", "watch"], registry=r,
        )  # fmt: skip
        self.guard_labels = Gauge(
            "streamscore_guard_labels",
            "Labels in the guard's window of each arm (candidate: the watched version;"
            " baseline: what it is judged against; between promotions, watch promotion's"
            " baseline is the primary version's latest labels, what the next move would be"
            " judged against); judged once both hold actions.guard.min_labels.",
            ["pipeline", "model", "watch", "arm"], registry=r,
        )  # fmt: skip
        self.guard_metric = Gauge(
            "streamscore_guard_metric",
            "The guard's served metric (actions.guard.metric) of each arm over its window.",
            ["pipeline", "model", "watch", "arm", "metric"], registry=r,
        )  # fmt: skip
        self.guard_rollbacks = Counter(
            "streamscore_guard_rollbacks_total",
            "Automatic rollbacks by the learner's guard: a canary's alias removed (watch"
            " canary) or the primary's alias moved back (watch promotion).",
            ["pipeline", "model", "watch"], registry=r,
        )  # fmt: skip
        # --- online/offline skew (streams/learning/skew_check.py) -------------------------
        self.skew_checked = Counter(
            "streamscore_skew_checked_total",
            "Sampled labelled predictions whose served features were compared with Feast's"
            " offline point-in-time values (monitoring.skew).",
            ["pipeline"], registry=r,
        )  # fmt: skip
        self.skew_mismatched = Counter(
            "streamscore_skew_mismatched_total",
            "Checked predictions whose feature differed from its offline value by more than"
            " monitoring.skew.tolerance, by feature.",
            ["pipeline", "feature"], registry=r,
        )  # fmt: skip
        self.skew_max_abs_difference = Gauge(
            "streamscore_skew_max_abs_difference",
            "Largest |online - offline| of a feature over the checks of the last"
            " monitoring.skew.window_seconds (0: every checked value matched).",
            ["pipeline", "feature"], registry=r,
        )  # fmt: skip
        self.skew_unchecked = Counter(
            "streamscore_skew_unchecked_total",
            "Sampled predictions left unchecked, by reason: busy (monitoring.skew.max_in_flight"
            " lookups pending), failed (the offline read or its record failed; logged),"
            " no_key (stored without entity key and time: scored with the check off).",
            ["pipeline", "reason"], registry=r,
        )  # fmt: skip

        # --- performance: estimated without labels, realized with them, concept drift ----
        # (streams/monitoring/estimate.py, streams/learning/realized.py, concept_drift.py)
        self.estimated_accuracy = Gauge(
            "streamscore_estimated_accuracy",
            "The primary's expected accuracy at the spec's threshold in the last closed"
            " monitoring window, from its scores alone (mean of p or 1-p by decision: right"
            " if the scores are calibrated); classification only.",
            ["pipeline", "model"], registry=r,
        )  # fmt: skip
        self.realized_accuracy = Gauge(
            "streamscore_realized_accuracy",
            "The primary's accuracy on the labels of the latest window of prediction time"
            " that has monitoring.performance.min_labels of them (learner).",
            ["pipeline", "model"], registry=r,
        )  # fmt: skip
        self.estimated_minus_realized_accuracy = Gauge(
            "streamscore_estimated_minus_realized_accuracy",
            "For the window of streamscore_realized_accuracy: the label-free estimate on the"
            " same labelled predictions minus the realized accuracy (above 0: the scores are"
            " overconfident, the calibration broke).",
            ["pipeline", "model"], registry=r,
        )  # fmt: skip
        self.realized_accuracy_window_start = Gauge(
            "streamscore_realized_accuracy_window_start_timestamp_seconds",
            "Start (Unix time) of the window of prediction time streamscore_realized_accuracy"
            " is of: labels arrive late, so it trails the estimate's window.",
            ["pipeline", "model"], registry=r,
        )  # fmt: skip
        self.concept_drift_detections = Counter(
            "streamscore_concept_drift_detections_total",
            "Changes ADWIN detected in a model's error stream (classification: wrong at the"
            " threshold, 0/1; regression: absolute error), by direction: worse (errors went"
            " up) or better.",
            ["pipeline", "model", "direction"], registry=r,
        )  # fmt: skip
        self.concept_drift_error_mean = Gauge(
            "streamscore_concept_drift_error_mean",
            "Mean error of a model in ADWIN's current window (the labels since its last"
            " detected change): error rate, or mean absolute error for regression.",
            ["pipeline", "model"], registry=r,
        )  # fmt: skip


def observe_many(histogram: Any, values: npt.NDArray[np.float64] | Iterable[float]) -> None:
    """Observe a whole batch of values in one pass.

    ``Histogram.observe`` costs ~1 µs a call; a 256-event batch would pay that per event on
    the hot path. This bins the batch with numpy and adds the counts to the labelled child's
    buckets directly: same exposition as looping ``observe`` (tests assert it).
    """
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        return
    bounds = np.asarray(histogram._upper_bounds, dtype=np.float64)
    # Prometheus buckets are "less than or equal": value v falls in the first bound >= v.
    counts = np.bincount(np.searchsorted(bounds, array, side="left"), minlength=len(bounds))
    for bucket, count in zip(histogram._buckets, counts, strict=True):
        if count:
            bucket.inc(int(count))
    histogram._sum.inc(float(array.sum()))


#: A probe answers (healthy?, JSON body); see ``streams.runtime.health``.
Probe = Callable[[], tuple[bool, dict[str, Any]]]


def serve(
    metrics: Metrics, host: str, port: int, probes: Mapping[str, Probe] | None = None
) -> WSGIServer:
    """Serve /metrics, and each of ``probes`` at its path (``/ready``, ``/live``: 200 or 503
    with a JSON body), from daemon threads: prometheus_client's threading WSGI server, so
    the port answers while the event loop is busy, or stuck. Returns the server (a worker
    never stops it; tests do, with ``shutdown``)."""
    metrics_app = make_wsgi_app(metrics.registry)
    routes = dict(probes or {})

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        probe = routes.get(environ.get("PATH_INFO", ""))
        if probe is None:
            return metrics_app(environ, start_response)  # type: ignore[no-any-return]
        healthy, body = probe()
        status = "200 OK" if healthy else "503 Service Unavailable"
        start_response(status, [("Content-Type", "application/json")])
        return [orjson.dumps(body)]

    family, address = _family_and_address(host, port)

    class Server(ThreadingWSGIServer):
        address_family = family

    httpd = make_server(address, port, app, Server, handler_class=_QuietHandler)
    threading.Thread(target=httpd.serve_forever, name="metrics-http", daemon=True).start()
    return httpd


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        """Probes come every few seconds: no access log."""


def _family_and_address(host: str, port: int) -> tuple[socket.AddressFamily, str]:
    """IPv4 or IPv6, as the host resolves (as prometheus_client's own server does)."""
    info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, sockaddr = info[0]
    return family, str(sockaddr[0])
