"""The widget in a real browser: JupyterLab 4 and Notebook 7 in headless Chromium, driven by Playwright (recipe:
UI-TESTING.md).

Starts one server (random port, token, temp config/runtime/settings dirs, own process group) that serves both
front ends, and one browser; writes notebooks showing the widget, runs them, types instructions, clicks and edits,
restarts the kernel, and checks what the page shows. Screenshots: tests/.artifacts/widget.png and
widget-dark.png (copied to docs/ for the README only when CONVSYNTH_UPDATE_SCREENSHOT=1, so a test run never
changes tracked files).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest
from helpers import (CHROMIUM, CHROMIUM_ARGS, KERNEL_READY, ROOT, T, free_port, need_chromium, reference_model,
                     stop_server, write_checkpoint)

pytestmark = pytest.mark.browser

PACKAGED = ROOT / "convsynth" / "models" / "convsynth-tiny"
ARTIFACTS = ROOT / "tests" / ".artifacts"


def notebook(model: str | None) -> dict:
    # resume=True: after a kernel restart, running the cell again brings the steps back (the teacher's cell).
    source = ("import convsynth\n"
              f"w = convsynth.ui({model!r}, resume=True, max_new_tokens=32, temperature=0, timeout=2)\n"
              "w")
    return {"cells": [{"cell_type": "code", "id": "widget", "metadata": {}, "execution_count": None,
                       "outputs": [], "source": source}],
            "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
            "nbformat": 4, "nbformat_minor": 5}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server in its own process group, with a notebook showing the widget; killed afterwards."""
    need_chromium()
    pytest.importorskip("playwright.sync_api")
    base = tmp_path_factory.mktemp("lab")
    root, conf = base / "root", base / "conf"
    root.mkdir()
    settings = conf / "settings"
    (settings / "@jupyterlab" / "notebook-extension").mkdir(parents=True)
    # Render every cell (no windowing) so outputs are in the DOM wherever they are.
    (settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings").write_text(
        json.dumps({"windowingMode": "none"}))
    (settings / "@jupyterlab" / "apputils-extension").mkdir(parents=True)  # no "Jupyter news?" toast
    (settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(conf / "config"), JUPYTER_RUNTIME_DIR=str(conf / "runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(settings), JUPYTERLAB_WORKSPACES_DIR=str(conf / "workspaces"),
               HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(ROOT))
    port, token = free_port(), secrets.token_hex(16)
    log = open(base / "lab.log", "wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--allow-root",
         f"--IdentityProvider.token={token}", "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", f"--ServerApp.root_dir={root}",
         "--JupyterNotebookApp.expose_app_in_browser=True"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # Meanwhile: the model. The packaged one when it is there (a nicer screenshot), else random weights.
        if (PACKAGED / "config.json").exists():
            model = None
        else:
            write_checkpoint(reference_model("tiny"), root / "checkpoint", "safetensors")
            model = "checkpoint"
        for name in ("widget", "teach", "teach7"):
            (root / f"{name}.ipynb").write_text(json.dumps(notebook(model)))
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"JupyterLab did not start:\n{(base / 'lab.log').read_text()[-3000:]}")
            time.sleep(0.3)
        yield {"url": url, "token": token, "root": root, "log": base / "lab.log"}
    finally:
        stop_server(server)
        log.close()


RUN_ALL = "() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }"
RESTART = "() => { window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.restart(); }"

CARDS = ".convsynth-card:not(.cs-live)"
LONG_INSTRUCTION = "Assign the list [3, 1, 4, 1, 5, 9, 2, 6] to a variable named numbers, then sort it in place."


@pytest.fixture(scope="module")
def browser(lab):
    from playwright.sync_api import expect, sync_playwright
    expect.set_options(timeout=T)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


class Widget:
    """The widget on a page, with the few moves the tests make."""

    def __init__(self, page):
        from playwright.sync_api import expect
        self.page, self.expect = page, expect
        self.box = page.locator(".convsynth-instruction input")
        self.generate = page.locator("button.convsynth-generate")
        self.cards = page.locator(CARDS)

    def open(self, url: str) -> "Widget":
        self.page.goto(url)
        # The status bar says Idle before the notebook's kernel is attached: wait for the kernel itself.
        self.page.wait_for_function(KERNEL_READY, timeout=T)
        self.page.evaluate(RUN_ALL)
        self.expect(self.box).to_be_visible(timeout=3 * T)  # the kernel imports torch and loads the model first
        return self

    def idle(self) -> None:
        self.expect(self.generate).to_be_enabled()  # the background thread is done
        self.expect(self.page.locator("button.convsynth-stop")).to_be_hidden()

    def type_and_enter(self, instruction: str, n: int) -> None:
        """Type at full speed (no delay between keys) and press Enter at once."""
        self.box.click()
        self.box.press_sequentially(instruction, delay=0)
        self.box.press("Enter")
        self.expect(self.cards).to_have_count(n)
        self.idle()
        card = self.cards.nth(n - 1)
        self.expect(card.locator(".cs-instr")).to_have_text(instruction)  # exactly the text typed
        self.expect(card.locator(".convsynth-stats")).to_contain_text("cached tokens")

    def codes(self) -> list[str]:
        return [self.cards.nth(i).locator(".convsynth-code").inner_text() for i in range(self.cards.count())]

    def edit_instruction(self, i: int, text: str) -> None:
        card = self.cards.nth(i)
        card.locator("button.convsynth-edit").click()
        editor = card.locator(".convsynth-edit-box input")
        self.expect(editor).to_be_focused()  # the Edit box takes focus
        editor.fill("")
        editor.press_sequentially(text, delay=0)
        editor.press("Enter")
        self.expect(self.cards.nth(i).locator(".cs-instr")).to_have_text(text)
        self.idle()

    def edit_code_and_run(self, i: int, code: str):
        card = self.cards.nth(i)
        card.locator(".cs-code-view").click()  # the code turns into an editor in place
        editor = card.locator("textarea.cs-code-editor")
        self.expect(editor).to_be_focused()
        editor.fill(code)
        editor.press("Shift+Enter")
        self.expect(self.cards.nth(i).locator(".convsynth-edited")).to_be_visible()
        self.expect(self.cards.nth(i).locator(".cs-out")).to_be_visible()
        self.idle()
        return self.cards.nth(i)

    def click(self, cls: str, status: str | None = None) -> None:
        """Click a widget-level button; ``status``: the line that says its work is done."""
        self.page.locator(f"button.{cls}").click()
        if status:
            self.expect(self.page.locator(".convsynth-status")).to_have_text(status)
        self.idle()


def build_four_steps(w: Widget) -> list[str]:
    steps = [LONG_INSTRUCTION, "Print numbers.", "Compute the sum of numbers and store it in total.", "Print total."]
    for n, instruction in enumerate(steps, 1):
        w.type_and_enter(instruction, n)
    return steps


def test_widget_in_jupyterlab(lab, browser):
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1200, "height": 1500})
    page.set_default_timeout(T)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    w = Widget(page).open(f"{lab['url']}/lab/tree/teach.ipynb?token={lab['token']}")
    expect = w.expect
    page.evaluate("() => { window.jupyterapp.shell.collapseLeft(); }")  # room for the widget
    steps = build_four_steps(w)  # typed at full speed, each generated for exactly its text

    # Editing step 1 regenerates it and keeps steps 2-4 as they were; undo and redo the edit.
    before = w.codes()
    w.edit_instruction(0, "Assign the list [5, 4, 6] to a variable named numbers.")
    expect(w.cards).to_have_count(4)
    assert w.codes()[1:] == before[1:]
    w.click("convsynth-undo-change", "Undid the edit.")
    expect(w.cards.nth(0).locator(".cs-instr")).to_have_text(steps[0])
    assert w.codes() == before
    w.click("convsynth-redo", "Redid the edit.")
    expect(w.cards.nth(0).locator(".cs-instr")).to_have_text("Assign the list [5, 4, 6] to a variable named numbers.")
    expect(w.cards).to_have_count(4)

    # A step's code edited in place and run with Shift+Enter (what it depends on runs first).
    card = w.edit_code_and_run(1, "numbers = [5, 4, 6]\nprint('edited', sum(numbers) * 2)")
    expect(card.locator(".convsynth-outputs")).to_contain_text("edited 30")

    # A step that times out (limit 2 s) says so in one line, and runs again with Run again.
    card = w.edit_code_and_run(2, "import os, time\nif not os.path.exists('tried'):\n"
                                  "    open('tried', 'w').close()\n    time.sleep(60)\nprint('went')")
    expect(card.locator(".convsynth-output")).to_contain_text("stopped after 2 s: time limit")
    expect(card).not_to_contain_text("KeyboardInterrupt")
    card.locator("button.convsynth-run").click()
    expect(card.locator(".convsynth-outputs")).to_contain_text("went")
    w.idle()

    # 10,000 printed lines stay in a box of bounded height, with "show all".
    card = w.edit_code_and_run(3, "for i in range(10_000):\n    print(i)")
    expect(card.locator(".cs-all-label")).to_be_visible()
    assert card.bounding_box()["height"] < 800, card.bounding_box()

    # Exporting twice gives two files, each with a link that opens it.
    w.click("convsynth-export-py")
    w.click("convsynth-export-py")
    link = page.locator(".convsynth-file-link a")
    expect(link).to_have_text("convsynth-session-2.py")
    assert link.get_attribute("href").endswith("/lab/tree/convsynth-session-2.py")
    assert (lab["root"] / "convsynth-session.py").exists() and (lab["root"] / "convsynth-session-2.py").exists()
    assert (lab["root"] / "convsynth-session.py").read_text() == (lab["root"] / "convsynth-session-2.py").read_text()

    # Deleting asks first.
    w.cards.nth(3).locator("button.convsynth-delete").click()
    expect(page.locator(".convsynth-confirm")).to_contain_text("Delete step 4")
    page.locator("button.convsynth-confirm-no").click()
    expect(w.cards).to_have_count(4)

    # The teaching view: cached and new tokens in two colours, monospace, explained.
    page.locator(".convsynth-prompt-view .jupyter-widget-Collapse-header").click()
    expect(page.locator(".convsynth-prompt-view .cs-tok.cs-cached").first).to_be_visible()
    expect(page.locator(".convsynth-prompt-view .cs-legend")).to_contain_text("Type an instruction")

    height = page.locator(".convsynth").bounding_box()["height"]
    page.set_viewport_size({"width": 1200, "height": int(height) + 400})  # the whole widget on screen
    shot = ARTIFACTS / "widget.png"
    page.locator(".convsynth").screenshot(path=str(shot))
    page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Dark'})")
    page.wait_for_function("() => document.body.dataset.jpThemeLight === 'false'", timeout=T)
    dark = ARTIFACTS / "widget-dark.png"
    page.locator(".convsynth").screenshot(path=str(dark))
    if os.environ.get("CONVSYNTH_UPDATE_SCREENSHOT") == "1":
        (ROOT / "docs").mkdir(exist_ok=True)
        shutil.copyfile(shot, ROOT / "docs" / "widget.png")
        shutil.copyfile(dark, ROOT / "docs" / "widget-dark.png")
    # The code keeps JupyterLab's dark editor background (not bright white).
    bg = page.locator(".convsynth .cs-hl").first.evaluate("e => getComputedStyle(e).backgroundColor")
    assert sum(int(c) for c in bg[bg.index("(") + 1:bg.index(")")].split(",")[:3]) < 3 * 128, bg
    page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Light'})")

    # A kernel restart: the widget says so; running the cell again brings every step back.
    page.set_viewport_size({"width": 1200, "height": 1500})
    page.evaluate(RESTART)
    gone = page.locator(".convsynth-kernel-gone")
    expect(gone).to_be_visible()
    expect(gone).to_contain_text("run this cell again to resume (4 steps saved)")
    page.wait_for_function(KERNEL_READY, timeout=T)
    page.evaluate(RUN_ALL)
    expect(gone).to_have_count(0, timeout=3 * T)  # the old output is replaced
    expect(w.cards).to_have_count(4, timeout=3 * T)
    expect(w.cards.nth(0).locator(".cs-instr")).to_have_text("Assign the list [5, 4, 6] to a variable named numbers.")
    expect(w.cards.nth(1).locator(".convsynth-outputs")).to_contain_text("edited 30")  # outputs saved too
    assert not [e for e in errors if "convsynth" in e.lower()], errors
    page.close()


def test_widget_in_notebook7(lab, browser):
    page = browser.new_page(viewport={"width": 1200, "height": 1500})
    page.set_default_timeout(T)
    w = Widget(page).open(f"{lab['url']}/notebooks/teach7.ipynb?token={lab['token']}")
    expect = w.expect
    build_four_steps(w)
    before = w.codes()
    w.edit_instruction(0, "Assign the list [2, 7] to a variable named numbers.")
    expect(w.cards).to_have_count(4)
    assert w.codes()[1:] == before[1:]
    w.click("convsynth-undo-change", "Undid the edit.")
    assert w.codes() == before
    w.click("convsynth-redo", "Redid the edit.")
    card = w.edit_code_and_run(1, "numbers = [2, 7]\nprint('sum', sum(numbers))")
    expect(card.locator(".convsynth-outputs")).to_contain_text("sum 9")
    w.click("convsynth-export-notebook")
    w.click("convsynth-export-notebook")
    link = page.locator(".convsynth-file-link a")
    expect(link).to_have_text("convsynth-session-2.ipynb")
    assert "convsynth-session-2.ipynb" in link.get_attribute("href")
    page.evaluate(RESTART)
    expect(page.locator(".convsynth-kernel-gone")).to_contain_text("run this cell again to resume (4 steps saved)")
    page.wait_for_function(KERNEL_READY, timeout=T)
    page.evaluate(RUN_ALL)
    expect(page.locator(".convsynth-kernel-gone")).to_have_count(0, timeout=3 * T)
    expect(w.cards).to_have_count(4, timeout=3 * T)
    page.close()
