"""The one error type for workout input (samples, FIT files, request fields, archives)."""

from streams.core.errors import InvalidInput


class WorkoutInputError(InvalidInput):
    """Workout input that cannot be stored; the message names the problem. An interface answers
    it with 400 (the API) or a command error; it pickles (raised in worker processes)."""
