"""The ``streamscore`` command line (``main``) and the modules behind its larger commands."""
