"""One exception hierarchy: every expected failure is a WidecliError with a one-line message.

The CLI turns these into one red line on stderr and exit code 2; anything else is a bug.
"""


class WidecliError(Exception):
    """Base class: the message is shown to the user as is, on one line."""


class RecipeError(WidecliError):
    """A recipe (file, key or --set override) is invalid."""


class DataError(WidecliError):
    """A data set cannot be found, downloaded or read."""


class BudgetError(RecipeError):
    """The weight budget cannot be met with the requested widths/connectivities."""


class StoreError(WidecliError):
    """A results directory or run file is unreadable, unwritable or corrupt."""


class DeviceError(WidecliError):
    """The requested device does not exist on this machine."""


class ResourceError(WidecliError):
    """The machine cannot hold what a recipe asks for (e.g. a model larger than the device's memory)."""


class SweepError(WidecliError):
    """A sweep cannot start or go on (executor, Ray cluster)."""
