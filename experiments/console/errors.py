"""The interactive cluster's one error: a command it cannot carry out."""


class ConsoleError(Exception):
    """A command the cluster cannot carry out; the message says why and what to type."""
