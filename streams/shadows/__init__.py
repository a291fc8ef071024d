"""Shadows: other models score the primary's exact vectors, off to the side (``shadow``), and
every model follows its registry alias as it moves (``model_follow``)."""
