"""Exception types with messages meant for the person at the terminal."""


class CeprError(Exception):
    """Base class: the CLI prints these as one clear line and exits non-zero, no traceback."""


class DatasetError(CeprError):
    """A dataset file or index is missing, corrupt or inconsistent; the message names the file."""
