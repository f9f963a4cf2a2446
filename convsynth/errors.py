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


class OptionError(ConfigError):
    """An option (device, dtype, stop pattern...) has a value convsynth cannot use. It is also a ConfigError and a
    ValueError, so code that catches either for a bad dtype or device keeps working."""


class MissingDependency(ConvsynthError, ImportError):
    """An optional package is not installed; the message gives the pip command that installs it."""


def require(module: str, *, extra: str, what: str = "this"):
    """Import ``module`` or raise MissingDependency naming the extra that installs it:
    ``require("ipywidgets", extra="ui", what="the widget")``."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError as e:
        missing = (getattr(e, "name", None) or module).split(".")[0]
        raise MissingDependency(f"{what} needs {missing}, which is not installed: "
                                f"pip install 'convsynth[{extra}]'") from None
