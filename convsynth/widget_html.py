"""HTML for the widget: highlighted code, step results, stats and the token view of the prompt.

Pure functions of plain values (no ipywidgets), so the rendering can be read and tested on its own.
"""
from __future__ import annotations

import base64
import html
import itertools
import re

from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import PythonLexer

from .execution import ANSI

try:  # JupyterLab's own highlighting colours (CSS variables), so code reads well in the light and dark themes
    from jupyterlab_pygments import JupyterStyle as _STYLE
except ImportError:  # pragma: no cover - it comes with JupyterLab
    _STYLE = "default"
_FORMATTER = HtmlFormatter(cssclass="cs-hl", style=_STYLE)
LONG_OUTPUT = 25  # lines: longer outputs sit in a scroll box of bounded height with "show all"
# Colours are JupyterLab's theme variables (light and dark themes), with light fallbacks for other front ends.
CSS = """<style>
.convsynth { max-width: 980px; color: var(--jp-content-font-color1, #1f2328); }
.convsynth .convsynth-title { font-size: 15px; }
.convsynth .convsynth-card { border: 1px solid var(--jp-border-color1, #d0d7de); border-radius: 8px;
  padding: 6px 10px 8px; margin: 0 0 10px 0; background: var(--jp-layout-color1, #fff); }
.convsynth .convsynth-card.cs-live { border-style: dashed; border-color: var(--jp-brand-color1, #5b8def); }
.convsynth .cs-step { display: inline-block; background: var(--jp-brand-color3, #e7eefc);
  color: var(--jp-brand-color0, #1f4fb4); border-radius: 10px; padding: 0 8px; margin-right: 8px; font-size: 12px;
  font-weight: 600; }
.convsynth .cs-instr { font-weight: 600; }
.convsynth .cs-hand, .convsynth .cs-edited { color: var(--jp-content-font-color2, #6e7781); font-style: italic; }
.convsynth .cs-edited { margin-left: 8px; font-size: 12px; }
.convsynth .cs-hl { background: var(--jp-cell-editor-background, #f6f8fa);
  color: var(--jp-content-font-color1, #1f2328); border-radius: 6px; margin: 4px 0; }
.convsynth .cs-hl pre { margin: 0; padding: 6px 10px; font-size: 13px; line-height: 1.4; white-space: pre-wrap;
  font-family: var(--jp-code-font-family, monospace); background: none; color: inherit; }
.convsynth .cs-code-view.cs-editable { cursor: text; }
.convsynth .cs-code-view.cs-editable:hover .cs-hl { outline: 1px dashed var(--jp-border-color1, #d0d7de); }
.convsynth .cs-code-editor { width: 100%; box-sizing: border-box; margin: 4px 0; padding: 6px 10px;
  font-family: var(--jp-code-font-family, monospace); font-size: 13px; line-height: 1.4; tab-size: 4;
  background: var(--jp-cell-editor-active-background, #fff); color: var(--jp-content-font-color1, #1f2328);
  border: 1px solid var(--jp-brand-color1, #5b8def); border-radius: 6px; resize: vertical; }
.convsynth .cs-input { display: flex; flex: 1 1 auto; gap: 4px; }
.convsynth .cs-input-box { flex: 1 1 auto; min-width: 0; padding: 3px 6px; font-size: 13px;
  background: var(--jp-widgets-input-background-color, #fff); color: var(--jp-widgets-input-color, #1f2328);
  border: 1px solid var(--jp-widgets-input-border-color, #9e9e9e); }
.convsynth .cs-input-button.convsynth-generate, .convsynth .cs-input-button.convsynth-edit-save {
  background: var(--jp-brand-color1, #2196f3); color: #fff; }
.convsynth .cs-empty { color: var(--jp-content-font-color2, #6e7781); font-style: italic; }
.convsynth .cs-out { border-left: 3px solid var(--jp-success-color1, #2da44e); padding: 2px 8px; margin: 4px 0; }
.convsynth .cs-out.cs-bad { border-left-color: var(--jp-error-color1, #cf222e); }
.convsynth .cs-out pre { margin: 2px 0; white-space: pre-wrap; font-size: 12.5px; background: none;
  color: inherit; font-family: var(--jp-code-font-family, monospace); }
.convsynth .cs-scroll { max-height: 320px; overflow: auto; }
.convsynth .convsynth-card:has(.cs-all-outputs) .convsynth-outputs { max-height: 320px; overflow: auto; }
.convsynth .convsynth-card:has(.cs-all-outputs:checked) .convsynth-outputs { max-height: none; }
.convsynth .cs-all { display: none; }
.convsynth .cs-all:checked ~ .cs-scroll { max-height: none; }
.convsynth .cs-all-label { cursor: pointer; color: var(--jp-content-link-color, #0969da); font-size: 12px; }
.convsynth .cs-all-label::after { content: "show all"; }
.convsynth .cs-all:checked + .cs-all-label::after { content: "show less"; }
.convsynth .cs-stderr { color: var(--jp-warn-color0, #9a6700); }
.convsynth .cs-err { color: var(--jp-error-color1, #cf222e); font-weight: 600; }
.convsynth .cs-traceback { color: var(--jp-content-font-color2, #57606a); }
.convsynth .cs-out img { max-width: 100%; display: block; margin: 4px 0; }
.convsynth .cs-meta, .convsynth .convsynth-stats, .convsynth .convsynth-status {
  color: var(--jp-content-font-color2, #6e7781); font-size: 12px; }
.convsynth .convsynth-error { color: var(--jp-error-color1, #cf222e); border: 1px solid var(--jp-error-color1, #cf222e);
  border-radius: 6px; padding: 2px 8px; background: var(--jp-layout-color1, #fff5f5); }
.convsynth .convsynth-error pre { white-space: pre-wrap; font-size: 12px;
  color: var(--jp-content-font-color2, #57606a); }
.convsynth .convsynth-kernel-gone { color: var(--jp-warn-color0, #9a6700); font-weight: 600; padding: 6px 10px;
  border: 2px solid var(--jp-warn-color1, #d4a72c); border-radius: 6px; margin: 4px 0;
  background: var(--jp-layout-color2, #fff8c5); }
.convsynth .convsynth-file-link, .convsynth .convsynth-confirm { font-size: 12px; }
.convsynth .convsynth-file-link { margin: 4px 0 0 2px; }
.convsynth .convsynth-file-link a { color: var(--jp-content-link-color, #0969da); text-decoration: underline; }
.convsynth .widget-button { width: auto; }
.convsynth .cs-tok { border-radius: 2px; box-shadow: inset -1px 0 0 rgba(0,0,0,.18); }
.convsynth .cs-cached { background: #d3f0d8; color: #1f2328; }
.convsynth .cs-new { background: #ffdfa8; color: #1f2328; }
.convsynth .cs-nl { color: #8c959f; }
.convsynth .cs-prompt-scroll { max-height: 420px; overflow: auto; display: flex; flex-direction: column-reverse;
  border: 1px solid var(--jp-border-color2, #eaeef2); background: var(--jp-layout-color0, #fbfbfb); }
.convsynth .cs-prompt { white-space: pre-wrap; font-size: 12.5px; line-height: 1.55; padding: 6px;
  font-family: var(--jp-code-font-family, monospace); }
.convsynth .convsynth-program { font-family: var(--jp-code-font-family, monospace); font-size: 12.5px;
  white-space: pre; max-height: 320px; overflow: auto; padding: 6px; margin: 0;
  border: 1px solid var(--jp-border-color2, #eaeef2); background: var(--jp-cell-editor-background, #f6f8fa);
  color: var(--jp-content-font-color1, #1f2328); }
</style>""" + "<style>" + _FORMATTER.get_style_defs(".convsynth .cs-hl") + "</style>"
_BOX_IDS = itertools.count()


def esc(text) -> str:
    return html.escape(ANSI.sub("", str(text)))


def code_html(code: str) -> str:
    if not code.strip():
        return '<div class="cs-empty">(no code)</div>'
    return highlight(code, PythonLexer(), _FORMATTER)


def _bounded(body: str, text: str) -> str:
    """Long text in a scroll box of bounded height with a "show all" switch (CSS only: no script needed)."""
    if text.count("\n") < LONG_OUTPUT:
        return body
    box = f"cs-all-{next(_BOX_IDS)}"
    return (f'<div class="cs-long"><input type="checkbox" class="cs-all" id="{box}">'
            f'<label class="cs-all-label" for="{box}"></label><div class="cs-scroll">{body}</div></div>')


def stopped_line(result) -> str | None:
    """One line for a step that was stopped (time limit or Stop), instead of a KeyboardInterrupt traceback."""
    if result.status == "timeout":
        limit = re.match(r"Timed out after ([\d.]+) s", result.note or "")
        return f"stopped after {limit.group(1) + ' s' if limit else _seconds(result.duration)}: time limit"
    if result.status == "error" and (result.error or "").startswith("KeyboardInterrupt") \
            and (result.note or "").startswith("Interrupted on request"):
        return "stopped: you pressed Stop"
    return None


def long_output(result) -> bool:
    """Whether a result's text outputs are long enough for a box of bounded height."""
    texts = [result.stdout, result.stderr, result.traceback or ""]
    texts += [str(b.get("text/plain", "")) for b in result.outputs if "text/html" not in b]
    return sum(t.count("\n") for t in texts) >= LONG_OUTPUT


def shown_outputs(result) -> list[dict]:
    """The result's nbformat outputs (outputs.py) as the widget shows them: a stopped step's KeyboardInterrupt
    traceback is left out (its status line says it in one line)."""
    from .outputs import to_outputs
    out = to_outputs(result)
    if result is not None and stopped_line(result):
        out = [o for o in out if o["output_type"] != "error"]
    return out


def result_html(result, step: int | None = None, outputs: bool = True) -> str:
    """An ExecutionResult as HTML: stdout, stderr, images and text outputs, then the error (with the step named)
    and its traceback; a stopped step gets one line instead. Long outputs scroll in a bounded box.
    ``outputs=False``: the status line only (the error or stop in one line, then status and time): the widget
    shows the outputs themselves as Jupyter does (``shown_outputs``), bounded by CSS with a "show all" switch here
    when they are long."""
    if result is None:
        return ""
    parts = []
    if not outputs:
        if long_output(result):  # the switch that unbounds the card's Output (CSS :has, see .cs-all-outputs)
            box = f"cs-all-{next(_BOX_IDS)}"
            parts.append(f'<input type="checkbox" class="cs-all cs-all-outputs" id="{box}">'
                         f'<label class="cs-all-label" for="{box}"></label>')
        result = _status_only(result)
    if result.stdout:
        parts.append(_bounded(f'<pre class="cs-stdout">{esc(result.stdout)}</pre>', result.stdout))
    if result.stderr:
        parts.append(_bounded(f'<pre class="cs-stderr">{esc(result.stderr)}</pre>', result.stderr))
    for bundle in result.outputs:
        for mime in ("image/png", "image/jpeg"):
            if mime in bundle:
                data = "".join(str(bundle[mime]).split())
                parts.append(f'<img alt="output" src="data:{mime};base64,{data}">')
                break
        else:
            if "image/svg+xml" in bundle:
                svg = base64.b64encode(str(bundle["image/svg+xml"]).encode()).decode()
                parts.append(f'<img alt="output" src="data:image/svg+xml;base64,{svg}">')
            elif "text/plain" in bundle:
                text = str(bundle["text/plain"])
                parts.append(_bounded(f'<pre class="cs-value">{esc(text)}</pre>', text))
    stopped = stopped_line(result)
    note = result.note or ""
    if stopped:
        parts.append(f'<div class="cs-err cs-stopped">{esc(stopped)}</div>')
        note = re.sub(r"^(Timed out after [\d.]+ s|Interrupted on request)[;,.]?\s*(interrupted\.)?\s*", "", note)
    elif result.error:
        named = f"Step {step}: " if step is not None else ""
        parts.append(f'<div class="cs-err">{esc(named + result.error)}</div>')
        if result.traceback and outputs:
            parts.append(_bounded(f'<pre class="cs-traceback">{esc(result.traceback)}</pre>', result.traceback))
    meta = f"{result.status} &middot; {_seconds(result.duration)}"
    if note and not result.ok:
        meta += f" &middot; {esc(note)}"
    elif result.truncated:
        meta += " &middot; output was cut"
    parts.append(f'<div class="cs-meta">{meta}</div>')
    bad = "" if result.ok else " cs-bad"
    return f'<div class="cs-out{bad}">{"".join(parts)}</div>'


def _status_only(result):
    import dataclasses
    return dataclasses.replace(result, stdout="", stderr="", outputs=[], traceback=None)


def _seconds(t: float) -> str:
    return f"{t * 1000:.0f} ms" if t < 1 else f"{t:.2f} s"


def stats_html(stats, edited: bool = False) -> str:
    """A generated step's numbers in words (right plurals; a rate only where one was measured)."""
    if not stats.finish_reason:
        return "written by hand"
    reason = {"cancelled": "stopped", "length": "token limit", "eos": "end of text"}.get(stats.finish_reason,
                                                                                       stats.finish_reason)
    parts = [f"prompt: <b>{stats.prefill_tokens}</b> new + <b>{stats.cached_tokens}</b> cached "
             f"token{'' if stats.cached_tokens == 1 else 's'}",
             f"first token {_seconds(stats.time_to_first_token)}"]
    if stats.generated_tokens > 1 and stats.decode_tokens_per_s > 0:
        parts.append(f"{stats.decode_tokens_per_s:.1f} tokens/s")
    parts.append(f"{_n(stats.generated_tokens)} ({reason})")
    if edited:
        parts[-1] += ", then edited by hand"
    if stats.acceptance_rate is not None:
        parts.append(f"speculation: <b>{stats.acceptance_rate:.0%}</b> of {_n(stats.drafted_tokens, 'drafted token')}"
                     " kept")
    return " &middot; ".join(parts)


def _n(count: int, word: str = "token") -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def prompt_html(tokens: list[tuple[str, bool]], instruction: bool = True) -> str:
    """The teaching view: each token of the prompt, green if served from the KV cache, amber if computed now.
    The box scrolls from the end, where the new tokens are. ``instruction``: whether the box had one."""
    cached = sum(1 for _, c in tokens if c)
    spans = []
    for text, from_cache in tokens:
        body = esc(text).replace("\n", '<span class="cs-nl">&#8629;</span>\n')
        cls = "cs-cached" if from_cache else "cs-new"
        spans.append(f'<span class="cs-tok {cls}">{body}</span>')
    if instruction:
        legend = (f'<span class="cs-tok cs-cached">&nbsp;served from the cache&nbsp;</span> {_n(cached)} &nbsp; '
                  f'<span class="cs-tok cs-new">&nbsp;computed now&nbsp;</span> {_n(len(tokens) - cached)} '
                  f'&nbsp; (total {len(tokens)}; &#8629; marks a newline)')
    else:  # nothing typed yet: say what the view shows rather than count a prompt that does not exist
        legend = (f'The session so far: {_n(len(tokens))}, {cached} of them in the cache '
                  f'(<span class="cs-tok cs-cached">&nbsp;green&nbsp;</span>). Type an instruction to see the '
                  'next prompt and what it costs.')
    return (f'<div class="cs-legend">{legend}</div>'
            f'<div class="cs-prompt-scroll"><div class="cs-prompt">{"".join(spans)}</div></div>')
