"""The card-fraud demo: a Feast feature repo and its synthetic data.

A package so the spec's generator (``features.card_fraud.synthetic:CardTransactions``) can
be imported; Feast skips ``__init__.py`` when it parses the repo. Import nothing here: the
Feast CLI imports ``definitions.py`` as a top-level module, and a second copy imported
through this package would define every Feast object twice.
"""
