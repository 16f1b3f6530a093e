"""Exception types with messages that name the problem and the fix.

Callers catch these to tell user mistakes (a bad config key, an unreadable
checkpoint) from bugs; every message says which file or field is at fault.
"""


class BertJaxError(Exception):
    """Base class of every error this package raises on bad input."""


class ConfigError(BertJaxError, ValueError):
    """A config file or override is invalid (unknown field, bad value)."""


class CheckpointError(BertJaxError, ValueError):
    """A checkpoint cannot be read: missing files, tensors or wrong shapes."""


class DataError(BertJaxError, ValueError):
    """A data file cannot be used: a missing column, an unknown label, a malformed line."""
