"""The data's own error, in a room of its own so that every data module can raise it."""

from ..errors import UserError


class DataError(UserError, ValueError):
    """The data cannot be loaded as configured; the message names the setting and the fix."""
