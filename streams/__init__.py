"""The stream layer: Faust app, topics, agents, record codecs, settings and the CLI."""
