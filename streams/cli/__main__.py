"""``python -m streams.cli``: the ``streamscore`` command."""

import sys

from streams.cli.main import app

sys.exit(app())
