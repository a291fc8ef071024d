"""What the monitoring stack reads from a spec: the alerting rules' service levels."""
