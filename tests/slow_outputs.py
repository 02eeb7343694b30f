"""A population score that holds the driver inside its output phase, for the signal tests (loaded with the
config key ``plugins``; never imported by the test process itself, so no other run gets the column).

``waits_for_a_signal`` (over ``params``) touches the file named by ``GRADSIGN_TEST_OUTPUTS_MARKER`` and then
sleeps ``GRADSIGN_TEST_OUTPUTS_SECONDS`` (default 4) before returning the parameter counts: a test waits for
the file, sends its signal, and so hits the window after ``ray.shutdown()`` where the summary, top-k and
report are computed and written. Without the variable it returns at once.
"""

import os
import time
from pathlib import Path

import numpy as np

from gradsign.actors.proxies import register_population


@register_population("waits_for_a_signal", ("params",))
def waits_for_a_signal(columns):
    marker = os.environ.get("GRADSIGN_TEST_OUTPUTS_MARKER")
    if marker:
        Path(marker).write_text(str(os.getpid()))
        time.sleep(float(os.environ.get("GRADSIGN_TEST_OUTPUTS_SECONDS", "4")))
    return np.asarray(columns["params"], dtype=float)
