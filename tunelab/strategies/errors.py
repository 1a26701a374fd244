"""The error every configuration check raises (kept apart so that low modules can raise it)."""


class ConfigError(ValueError):
    """A run configuration that cannot work, found before any work is done."""
