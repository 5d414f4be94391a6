"""The one error of the cluster runner's parts."""


class SetupError(RuntimeError):
    """The machine cannot run a cluster (or a part of it); the message says how to fix it."""
