"""HTML for the widget: highlighted code, step results, stats and the token view of the prompt.

Pure functions of plain values (no ipywidgets), so the rendering can be read and tested on its own.
"""
from __future__ import annotations

import base64
import html
import re

from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import PythonLexer

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_FORMATTER = HtmlFormatter(cssclass="cs-hl")
CSS = """<style>
.convsynth { max-width: 980px; color: var(--jp-content-font-color1, #1f2328); }
.convsynth .convsynth-title { font-size: 15px; }
.convsynth .convsynth-card { border: 1px solid var(--jp-border-color1, #d0d7de); border-radius: 8px;
  padding: 6px 10px 8px; margin: 0 0 10px 0; background: var(--jp-layout-color1, #fff); }
.convsynth .convsynth-card.cs-live { border-style: dashed; border-color: #5b8def; }
.convsynth .cs-step { display: inline-block; background: #e7eefc; color: #1f4fb4; border-radius: 10px;
  padding: 0 8px; margin-right: 8px; font-size: 12px; font-weight: 600; }
.convsynth .cs-instr { font-weight: 600; }
.convsynth .cs-hand { color: #6e7781; font-style: italic; }
.convsynth .cs-hl { background: #f6f8fa; color: #1f2328; border-radius: 6px; margin: 4px 0; }
.convsynth .cs-hl pre { margin: 0; padding: 6px 10px; font-size: 13px; line-height: 1.4; white-space: pre-wrap; }
.convsynth .cs-empty { color: #6e7781; font-style: italic; }
.convsynth .cs-out { border-left: 3px solid #2da44e; padding: 2px 8px; margin: 4px 0; }
.convsynth .cs-out.cs-bad { border-left-color: #cf222e; }
.convsynth .cs-out pre { margin: 2px 0; white-space: pre-wrap; font-size: 12.5px; background: none; }
.convsynth .cs-stderr { color: #9a6700; }
.convsynth .cs-err { color: #cf222e; font-weight: 600; }
.convsynth .cs-traceback { color: #57606a; }
.convsynth .cs-out img { max-width: 100%; display: block; margin: 4px 0; }
.convsynth .cs-meta, .convsynth .convsynth-stats, .convsynth .convsynth-status { color: #6e7781; font-size: 12px; }
.convsynth .convsynth-error { color: #cf222e; border: 1px solid #cf222e; border-radius: 6px; padding: 2px 8px;
  background: #fff5f5; }
.convsynth .convsynth-error pre { white-space: pre-wrap; font-size: 12px; color: #57606a; }
.convsynth .widget-button { width: auto; }
.convsynth .cs-tok { border-radius: 2px; box-shadow: inset -1px 0 0 rgba(0,0,0,.18); }
.convsynth .cs-cached { background: #d3f0d8; color: #1f2328; }
.convsynth .cs-new { background: #ffdfa8; color: #1f2328; }
.convsynth .cs-nl { color: #8c959f; }
.convsynth .cs-prompt { white-space: pre-wrap; font-size: 12.5px; line-height: 1.55; max-height: 420px;
  overflow: auto; background: #fbfbfb; padding: 6px; border: 1px solid #eaeef2; }
</style>""" + "<style>" + _FORMATTER.get_style_defs(".convsynth .cs-hl") + "</style>"


def esc(text) -> str:
    return html.escape(_ANSI.sub("", str(text)))


def code_html(code: str) -> str:
    if not code.strip():
        return '<div class="cs-empty">(no code)</div>'
    return highlight(code, PythonLexer(), _FORMATTER)


def result_html(result, outputs: bool = True) -> str:
    """An ExecutionResult as HTML: stdout, stderr, images and text outputs, then the error and traceback, then
    the status line. ``outputs=False``: the status line only (the widget shows the outputs as Jupyter does,
    see outputs.py)."""
    if result is None:
        return ""
    parts = []
    if not outputs:
        result = _status_only(result)
    if result.stdout:
        parts.append(f'<pre class="cs-stdout">{esc(result.stdout)}</pre>')
    if result.stderr:
        parts.append(f'<pre class="cs-stderr">{esc(result.stderr)}</pre>')
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
                parts.append(f'<pre class="cs-value">{esc(bundle["text/plain"])}</pre>')
    if result.error:
        parts.append(f'<div class="cs-err">{esc(result.error)}</div>')
        if result.traceback:
            parts.append(f'<pre class="cs-traceback">{esc(result.traceback)}</pre>')
    meta = f"{result.status} &middot; {result.duration:.2f} s"
    if result.note and not result.ok:
        meta += f" &middot; {esc(result.note)}"
    elif result.truncated:
        meta += " &middot; output was cut"
    parts.append(f'<div class="cs-meta">{meta}</div>')
    bad = "" if result.ok else " cs-bad"
    return f'<div class="cs-out{bad}">{"".join(parts)}</div>'


def _status_only(result):
    import dataclasses
    return dataclasses.replace(result, stdout="", stderr="", outputs=[], error=None, traceback=None)


def _seconds(t: float) -> str:
    return f"{t * 1000:.0f} ms" if t < 1 else f"{t:.2f} s"


def stats_html(stats) -> str:
    if not stats.finish_reason:
        return "written by hand"
    reason = {"cancelled": "stopped"}.get(stats.finish_reason, stats.finish_reason)
    return (f"prompt: <b>{stats.prefill_tokens}</b> new + <b>{stats.cached_tokens}</b> cached tokens &middot; "
            f"first token {_seconds(stats.time_to_first_token)} &middot; {stats.decode_tokens_per_s:.1f} tokens/s "
            f"&middot; {stats.generated_tokens} tokens ({reason})" + _drafts(stats))


def _drafts(stats) -> str:
    rate = getattr(stats, "acceptance_rate", None)
    if rate is None:
        return ""
    return (f" &middot; speculation: <b>{rate:.0%}</b> of {_n(stats.drafted_tokens, 'drafted token')} kept")


def _n(count: int, word: str = "token") -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def prompt_html(tokens: list[tuple[str, bool]]) -> str:
    """The teaching view: each token of the prompt, green if served from the KV cache, amber if prefilled."""
    cached = sum(1 for _, c in tokens if c)
    spans = []
    for text, from_cache in tokens:
        body = esc(text).replace("\n", '<span class="cs-nl">&#8629;</span>\n')
        cls = "cs-cached" if from_cache else "cs-new"
        spans.append(f'<span class="cs-tok {cls}">{body}</span>')
    legend = (f'<div class="cs-legend"><span class="cs-tok cs-cached">&nbsp;served from the cache&nbsp;</span> '
              f'{_n(cached)} &nbsp; <span class="cs-tok cs-new">&nbsp;prefilled now&nbsp;</span> '
              f'{_n(len(tokens) - cached)} &nbsp; (total {len(tokens)}; &#8629; marks a newline)</div>')
    return legend + f'<div class="cs-prompt">{"".join(spans)}</div>'

