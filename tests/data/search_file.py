"""A search file for `dtune run`, as a user would write one."""

import time

from dtune import Real

space = {"x": Real(0.0, 1.0), "y": Real(0.0, 1.0)}


def objective(x, y):
    time.sleep(0.4)
    return (x - 0.3) ** 2 + (y - 0.7) ** 2
