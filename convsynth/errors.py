"""Exceptions that convsynth raises. Each message says what is wrong and what to do."""


def describe(err: BaseException, limit: int = 200) -> str:
    """``Type: first line of the message`` (cut to ``limit``), for one-line reasons in warnings and notes."""
    return f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:limit]}"


class ConvsynthError(Exception):
    """Base class of every error convsynth raises on purpose."""


class ConfigError(ConvsynthError, ValueError):
    """A config.json describes a model convsynth cannot run."""


class CheckpointError(ConvsynthError, OSError):
    """A checkpoint is missing, unreadable, corrupt or does not fit the config."""


class ContextWindowError(ConvsynthError, ValueError):
    """A prompt (plus the tokens to generate) does not fit the model's context window."""


class SamplingError(ConvsynthError, ValueError):
    """Sampling settings are out of range."""


class UsageError(ConvsynthError, ValueError):
    """An argument (a command-line flag, a problem range...) is out of range or malformed."""


class SessionError(ConvsynthError):
    """A session operation cannot be done (bad index, nothing to undo, wrong model...)."""


class GenerationCancelled(ConvsynthError):
    """Generation was stopped by cancel(); the session is left as it was before the turn."""


class RemoteError(ConvsynthError, ConnectionError):
    """A model server (``convsynth.connect``) is down, refused a request, or broke off a reply."""
