"""Errors a user can cause and fix. The CLI prints them as one line, without a traceback."""


class PipelineError(Exception):
    """A problem with the user's input (config, data, request), with a message naming what to fix."""


class ConfigError(PipelineError):
    pass


class DataError(PipelineError):
    pass


class StorageError(PipelineError):
    """A storage location that cannot be read or written (missing bucket, no credentials, no such file)."""
