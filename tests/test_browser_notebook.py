"""At home in the notebook, in a real browser, in JupyterLab 4 and in Notebook 7 (one server serves both): a step
reads a file placed beside the notebook, a shared DataFrame comes back from a step as an HTML table, Fix
replaces a failing step, and ``%%convsynth`` puts its code into the next cell. Recipe: UI-TESTING.md; the
server and browser helpers are in helpers.py."""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request

import pytest

from helpers import CHROMIUM, CHROMIUM_ARGS, KERNEL_READY, ROOT, T, free_port, need_chromium, stop_server

pytestmark = pytest.mark.browser

SETUP = """import convsynth, pandas as pd
%load_ext convsynth
# Every generated step is cut to nothing, so the Fix below runs whatever the model writes.
s = convsynth.Session(convsynth.load(), temperature=0, max_new_tokens=16, stop=lambda text: 0)
s.add_code("print(open('data.csv').read().strip())")
s.share(df=pd.DataFrame({"city": ["Oslo", "Lima"], "temp": [3.5, 19.0]}))
s.add_code("df")
s.add_code("w = 1 / 0", instruction="Assign 1 to w.")
s.run()
s.widget()"""
MAGIC = "%%convsynth -t 0 -n 16\nAssign the number 3 to x."


def notebook() -> dict:
    cells = [{"cell_type": "code", "id": f"c{i}", "metadata": {}, "execution_count": None, "outputs": [],
              "source": src} for i, src in enumerate([SETUP, MAGIC])]
    return {"cells": cells, "nbformat": 4, "nbformat_minor": 5,
            "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}}}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One Jupyter server (JupyterLab and Notebook 7 both), with two copies of the notebook and a data file."""
    need_chromium()
    pytest.importorskip("playwright.sync_api")
    pytest.importorskip("notebook")
    pytest.importorskip("pandas")
    base = tmp_path_factory.mktemp("nbserver")
    root, conf = base / "root", base / "conf"
    root.mkdir()
    settings = conf / "settings" / "@jupyterlab"
    (settings / "notebook-extension").mkdir(parents=True)
    (settings / "notebook-extension" / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    (settings / "apputils-extension").mkdir(parents=True)
    (settings / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    (conf / "config").mkdir()
    (conf / "config" / "jupyter_server_config.json").write_text(json.dumps({  # window.jupyterapp in both
        "LabApp": {"expose_app_in_browser": True, "news_url": ""},
        "JupyterNotebookApp": {"expose_app_in_browser": True}}))
    (root / "data.csv").write_text("where,what\nbeside,the notebook\n")
    for name in ("lab", "nb7"):
        (root / f"{name}.ipynb").write_text(json.dumps(notebook()))
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(conf / "config"), JUPYTER_RUNTIME_DIR=str(conf / "runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(conf / "settings"), JUPYTERLAB_WORKSPACES_DIR=str(conf / "workspaces"),
               HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(ROOT))
    port, token = free_port(), secrets.token_hex(16)
    log = open(base / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--allow-root",
         f"--IdentityProvider.token={token}", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         f"--ServerApp.root_dir={root}"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start:\n{(base / 'server.log').read_text()[-3000:]}")
            time.sleep(0.3)
        yield {"url": url, "token": token, "root": root}
    finally:
        stop_server(proc)
        log.close()


@pytest.mark.parametrize("front_end, path", [("JupyterLab", "lab/tree/lab.ipynb"),
                                             ("Notebook 7", "notebooks/nb7.ipynb")])
def test_files_shared_data_fix_and_the_magic(server, front_end, path):
    from playwright.sync_api import expect, sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1600})
            page.set_default_timeout(T)
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{server['url']}/{path}?token={server['token']}")
            page.wait_for_function(KERNEL_READY, timeout=2 * T)  # the kernel itself, not the status bar
            page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")

            cards = page.locator(".convsynth-card:not(.cs-live)")
            expect(cards).to_have_count(4, timeout=3 * T)  # the kernel imports torch, loads the model, runs
            expect(page.locator(".convsynth-title .cs-folder")).to_have_text(str(server["root"].resolve()))
            # Step 1 read data.csv beside the notebook; its output is rendered by the front end itself.
            expect(cards.nth(0).locator(".convsynth-outputs")).to_contain_text("beside,the notebook")
            # Step 3 shows the shared DataFrame (changed nowhere) as the HTML table Jupyter renders.
            table = cards.nth(2).locator(".convsynth-outputs table")
            expect(table).to_be_visible()
            expect(table.locator("td", has_text="Oslo")).to_have_count(1)
            # Step 4 failed: its traceback names the step, and Fix replaces it with an attempt that runs.
            expect(cards.nth(3).locator(".convsynth-outputs")).to_contain_text("ZeroDivisionError")
            expect(cards.nth(3).locator(".convsynth-outputs")).to_contain_text("In step 4, line 1")
            fix = cards.nth(3).locator("button.convsynth-fix")
            expect(fix).to_be_visible()
            expect(cards.nth(0).locator("button.convsynth-fix")).to_be_hidden()
            fix.click()
            expect(cards.nth(3).locator("button.convsynth-fix")).to_be_hidden(timeout=2 * T)
            expect(cards.nth(3).locator(".convsynth-output")).to_contain_text("ok")
            expect(page.locator(".convsynth-error")).to_be_hidden()
            # %%convsynth put its code into a new cell below it.
            new_cell = page.locator(".jp-CodeCell .jp-InputArea-editor", has_text="# Assign the number 3 to x.")
            expect(new_cell).to_have_count(1, timeout=2 * T)
            expect(page.locator(".jp-CodeCell")).to_have_count(3)
            assert not [e for e in errors if "convsynth" in e.lower()], errors
        finally:
            browser.close()
