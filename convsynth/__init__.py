"""convsynth: conversational, multi-turn program synthesis with CodeGen models.

    import convsynth
    cg = convsynth.load()                      # the small packaged model; or a directory / hub id
    # or a model on a server: cg = convsynth.connect("http://127.0.0.1:8000", model=...)
    print(cg.complete("def add(a, b):", temperature=0))
    s = convsynth.Session(cg)
    turn = s.ask("Assign 3 to x.")

Heavy parts (the session's sandbox, the widget) are imported only when used.
"""
from .config import CodeGenConfig, PRESETS
from .errors import (CheckpointError, ConfigError, ContextWindowError, ConvsynthError, GenerationCancelled,
                     SamplingError, SessionError)

__version__ = "0.1.0"
__all__ = ["load", "connect", "CodeGen", "Session", "ui", "CodeGenConfig", "PRESETS", "ConvsynthError", "CheckpointError",
           "ConfigError", "ContextWindowError", "SamplingError", "SessionError", "GenerationCancelled"]


def __getattr__(name):
    # Lazy: `import convsynth` stays fast and does not import torch until a model is needed.
    if name in ("load", "CodeGen"):
        from . import codegen
        return getattr(codegen, name)
    if name == "connect":
        from .remote import connect
        return connect
    if name in ("Session", "Turn"):
        from . import session
        return getattr(session, name)
    if name == "ui":
        from .widget import ui
        return ui
    raise AttributeError(f"module 'convsynth' has no attribute {name!r}")
