"""The widget in a real browser: JupyterLab 4 in headless Chromium, driven by Playwright (recipe: UI-TESTING.md).

Starts its own JupyterLab (random port, token, temp config/runtime/settings dirs, own process group), writes a
notebook showing the widget, runs it, types instructions, clicks Generate / Run / Undo and checks what the page
shows. Screenshot: tests/.artifacts/widget.png (copied to docs/widget.png for the README only when
CONVSYNTH_UPDATE_SCREENSHOT=1, so a test run never changes tracked files).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PACKAGED = ROOT / "convsynth" / "models" / "convsynth-tiny"
ARTIFACTS = ROOT / "tests" / ".artifacts"
T = 60_000  # ms: the longest any single wait may take (the machine may be busy)


def ensure_chromium() -> None:
    """The README's test command installs Chromium; try once here too, and skip only if that is impossible."""
    if Path(CHROMIUM).exists():
        return
    apt = shutil.which("apt-get")
    if apt and os.geteuid() == 0:
        for cmd in ([apt, "install", "-y", "--no-install-recommends", "chromium"], [apt, "update"],
                    [apt, "install", "-y", "--no-install-recommends", "chromium"]):
            try:
                subprocess.run(cmd, capture_output=True, timeout=600)
            except (OSError, subprocess.TimeoutExpired):
                break
            if Path(CHROMIUM).exists():
                return
    pytest.skip(f"{CHROMIUM} is missing and could not be installed "
                "(run: apt-get update && apt-get install -y --no-install-recommends chromium)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def notebook(model: str | None) -> dict:
    source = ("import convsynth\n"
              f"w = convsynth.ui({model!r}, max_new_tokens=32, temperature=0)\n"
              "w")
    return {"cells": [{"cell_type": "code", "id": "widget", "metadata": {}, "execution_count": None,
                       "outputs": [], "source": source}],
            "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
            "nbformat": 4, "nbformat_minor": 5}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server in its own process group, with a notebook showing the widget; killed afterwards."""
    ensure_chromium()
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
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", f"--ServerApp.root_dir={root}"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # Meanwhile: the model. The packaged one when it is there (a nicer screenshot), else random weights.
        if (PACKAGED / "config.json").exists():
            model = None
        else:
            from conftest import reference_model, write_checkpoint
            write_checkpoint(reference_model("tiny"), root / "checkpoint", "safetensors")
            model = "checkpoint"
        (root / "widget.ipynb").write_text(json.dumps(notebook(model)))
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


def stop_server(server: subprocess.Popen) -> None:
    """SIGTERM the server's group (it shuts its kernels down), then kill whatever is left: the group and every
    process it started, kernels included (they lead their own sessions)."""
    import psutil
    try:
        family = psutil.Process(server.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    try:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(server.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    server.wait()
    for p in family:
        try:
            for child in p.children(recursive=True):
                child.kill()
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(family, timeout=10)


KERNEL_READY = """() => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.connectionStatus === 'connected' && k.status === 'idle';
}"""

CARDS = ".convsynth-card:not(.cs-live)"


def test_widget_in_jupyterlab(lab):
    from playwright.sync_api import expect, sync_playwright
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1500})
            page.set_default_timeout(T)
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{lab['url']}/lab/tree/widget.ipynb?token={lab['token']}")
            # The status bar says Idle before the notebook's kernel is attached: wait for the kernel itself.
            page.wait_for_function(KERNEL_READY, timeout=T)
            page.evaluate("() => { window.jupyterapp.shell.collapseLeft(); }")  # room for the widget
            page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")

            box = page.locator(".convsynth-instruction input")
            expect(box).to_be_visible(timeout=2 * T)  # the kernel imports torch and loads the model first
            generate = page.locator("button.convsynth-generate")
            cards = page.locator(CARDS)

            def ask(instruction: str, n: int):
                box.fill(instruction)
                expect(generate).to_be_enabled()
                generate.click()
                expect(cards).to_have_count(n)
                expect(cards.nth(n - 1).locator(".convsynth-code")).not_to_be_empty()
                expect(generate).to_be_enabled()  # the background thread is done
                expect(cards.nth(n - 1).locator(".convsynth-stats")).to_contain_text("cached tokens")

            ask("Assign the list [3, 1, 4, 1, 5, 9, 2, 6] to a variable named numbers.", 1)
            ask("Sort numbers in ascending order and store the result in result.", 2)
            expect(box).to_have_value("")  # a submitted instruction leaves the box
            box.fill("Print result.")
            box.press("Enter")  # Enter submits too
            expect(cards).to_have_count(3)
            expect(generate).to_be_enabled()

            cards.nth(2).locator("button.convsynth-run").click()  # runs every step not run yet, in order
            for i in range(3):
                expect(cards.nth(i).locator(".convsynth-output .cs-out")).to_be_visible()
            expect(generate).to_be_enabled()

            ask("Compute the sum of result and store it in total.", 4)
            expect(cards.nth(0).locator("button.convsynth-undo")).to_be_hidden()  # Undo only on the last card
            cards.nth(3).locator("button.convsynth-undo").click()
            expect(cards).to_have_count(3)
            expect(generate).to_be_enabled()
            expect(page.locator(".convsynth-error")).to_be_hidden()

            # The teaching view: cached and newly prefilled tokens in two colours.
            page.locator(".convsynth-prompt-view .jupyter-widget-Collapse-header").click()
            expect(page.locator(".convsynth-prompt-view .cs-tok.cs-cached").first).to_be_visible()
            expect(page.locator(".convsynth-prompt-view .cs-legend")).to_contain_text("served from the cache")

            height = page.locator(".convsynth").bounding_box()["height"]
            page.set_viewport_size({"width": 1200, "height": int(height) + 400})  # the whole widget on screen
            shot = ARTIFACTS / "widget.png"
            page.locator(".convsynth").screenshot(path=str(shot))
            if os.environ.get("CONVSYNTH_UPDATE_SCREENSHOT") == "1":
                (ROOT / "docs").mkdir(exist_ok=True)
                shutil.copyfile(shot, ROOT / "docs" / "widget.png")
            assert not [e for e in errors if "convsynth" in e.lower()], errors
        finally:
            browser.close()
