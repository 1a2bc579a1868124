"""A task for the tune tests: the built-in MLP task, shortened so that trials take milliseconds."""

from optimlab import tune


def task(make_optimizer, *, trial=None, report=None):
    return tune.quicktask(make_optimizer, trial=trial, report=report, steps=20)
