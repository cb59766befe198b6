"""The suite's own errors: what a user can fix, as opposed to bugs.

Every stage entry point turns a `SuiteError` into one line on stderr and exit status 2
(`pipelines.stage`); anything else is a bug and keeps its traceback. Library code raises the
most specific class below, so callers can still catch the builtin it derives from.
"""

from __future__ import annotations


class SuiteError(Exception):
    """Base class: an error whose message alone tells the user what is wrong and what to do."""


class ParamsError(SuiteError, ValueError):
    """A parameter value that cannot work; the message names its dotted key (`metrics.fid.resize`)."""


class DataError(SuiteError, ValueError):
    """Input data that cannot be used as it is: a malformed protocol file, a corrupt checkpoint, ..."""


class MissingInputError(SuiteError, FileNotFoundError):
    """A file or folder an earlier stage (or the user) should have provided is not there."""


class NotAvailableError(MissingInputError):
    """A method cannot run because its weights could not be obtained (offline, moved file).

    The anonymise, evaluate and report stages record the method as not available with this
    message instead of stopping: its rows say so.
    """
