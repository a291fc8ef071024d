"""Scoring: one micro-batch from message bytes to published predictions and dead letters.

``batching`` and ``inflight`` shape the batches, ``validation`` and ``limits`` decode them,
``pipeline`` reads features and runs the model, ``records`` and ``publish`` write the
output, ``prediction_store`` remembers what was served for the label join, and ``service``
ties these together for the agent.
"""
