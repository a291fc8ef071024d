"""Monitoring: what the spec's ``monitoring:`` section declares (``spec``), the drift the
scoring worker measures against the training reference (``drift``) and the alerting rules
rendered for Prometheus (``rules``)."""
