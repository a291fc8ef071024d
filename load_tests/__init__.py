"""Load tests: the real pipeline against a pass-through ceiling and a naive per-event pipeline.

``python -m load_tests.run`` (``make load``) starts everything it needs on embedded servers,
offers Kafka traffic at controlled rates, measures latency from event time to publish time,
sustained throughput and losses, and writes a JSON and markdown report with plots into
``load_tests/reports/``. See load_tests/README.md.
"""
