"""The error every interface answers with a 4xx naming the problem (the API's
``{"detail": ...}``, a page's message, a command's error, a WebSocket's error frame)."""


class InvalidInput(ValueError):
    """Client input that cannot be used; the message names the problem."""

    status = 400


class EntryTooLarge(InvalidInput):
    status = 413
