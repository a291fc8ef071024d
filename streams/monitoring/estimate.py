"""A classifier's accuracy estimated from its own scores, without labels (confidence-based,
as NannyML's CBPE).

If the scores are calibrated probabilities (of the events scored ``p``, a share ``p`` turn
out positive), an event decided positive (``p >= threshold``) is right with probability
``p`` and one decided negative with probability ``1 - p``: the expected accuracy of a
window is the mean of those. It needs no label, so the drift monitor publishes it when the
window closes; the realized accuracy of the same stretch of predictions comes later, with
their labels (``streams.learning.realized``), and the difference says whether the model's
calibration still holds. A regression model's score is a value, not a probability: no
estimate.

>>> import numpy as np
>>> expected_correct(np.array([0.9, 0.2, 0.6, 0.4]), threshold=0.5).round(2).tolist()
[0.9, 0.8, 0.6, 0.6]
>>> expected_correct(np.array([0.4]), threshold=0.3).tolist()  # decided positive: right 40%
[0.4]
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def expected_correct(scores: npt.ArrayLike, threshold: float) -> npt.NDArray[np.float64]:
    """Per event, the probability its decision at ``threshold`` is right, if ``scores`` are
    calibrated probabilities of the positive class."""
    p = np.asarray(scores, dtype=np.float64)
    return np.where(p >= threshold, p, 1.0 - p)
