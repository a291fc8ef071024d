"""What the service does on its own evidence: guarded promotion (and later retraining and
canary rollout), each recorded on the pipeline's actions topic."""
