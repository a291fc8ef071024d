"""Labels and learning: the labels consumer (``label_consumer``) joins delayed labels to what
was predicted (``join``), evaluates every model and lets the one online learner learn
(``learner``); ``single_owner`` makes exactly one worker own the labels."""
