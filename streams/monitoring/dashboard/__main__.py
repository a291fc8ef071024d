"""``python -m streams.monitoring.dashboard``: print the model-health dashboard's JSON."""

import sys

from streams.monitoring.dashboard import render

sys.stdout.write(render())
