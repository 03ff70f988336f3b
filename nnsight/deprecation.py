"""``NNsightDeprecationWarning``: the warning for spellings nnsight keeps working but no longer uses.

A ``FutureWarning`` subclass (as in nnsight 0.8), so it is shown by default and can be filtered
on its own: ``warnings.simplefilter("ignore", nnsight.NNsightDeprecationWarning)``.
"""


class NNsightDeprecationWarning(FutureWarning):
    """A spelling that still works but has a preferred replacement, named in the message."""
