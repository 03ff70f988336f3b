"""``NNsightDeprecationWarning``: a spelling from an earlier nnsight that still works, with its current form."""


class NNsightDeprecationWarning(DeprecationWarning):
    """Code uses a spelling of nnsight 0.8 that this version also accepts; the message gives the current one."""
