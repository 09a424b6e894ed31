"""The notebooks in a real browser: JupyterLab from .venv, driven through Debian's chromium by selenium.

- ``test_notebook_opens_clean``: every notebooks/*.ipynb opens on its declared kernel without a dialog, is not
  marked modified once the kernel is idle, and JupyterLab's save (Ctrl+S) writes back the very bytes that are
  committed (so the notebooks are committed in the exact form JupyterLab saves).
- ``test_run_all_in_browser``: vtab.ipynb and results.ipynb: Edit > Clear Outputs of All Cells, then
  Run > Run All Cells from the menus; every code cell gets an execution count, no cell shows an error, every plot
  cell renders an image.

Nothing in the repository is modified: the server's root is a temporary folder holding copies of the notebooks
(fresh for each test), copies of results/ and docs/figures/, symlinks to pyproject.toml, shiplib/ and data/ (so
shiplib.report.setup_notebook() finds that folder as the repository root) and an empty runs/. Jupyter's config,
runtime folders and IPython's folder are temporary too, so no user setting leaks in; the kernelspecs are the ones
scripts/setup.sh registered (the notebooks must start this clone's python through them). Chromium and chromedriver are
Debian's (installed by scripts/install_browser.sh); the test skips, saying why, where they cannot be found. Screenshots
go to runs/screenshots/ (git-ignored) or to $SHIPLIB_SCREENSHOTS.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.browser]

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p.name for p in (REPO / "notebooks").glob("*.ipynb"))
RUN_NOTEBOOKS = ["vtab.ipynb", "results.ipynb"]
KERNEL_NAME, KERNEL_DISPLAY_NAME = "shiplib", "Python 3 (shiplib)"
SCREENSHOTS = Path(os.environ.get("SHIPLIB_SCREENSHOTS") or REPO / "runs" / "screenshots")

CHROME_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--window-size=1600,1200"]
WINDOW = (1600, 1200)
#: Seconds. Every wait in this file is bounded by one of these.
SERVER_START_TIMEOUT = 90
PAGE_READY_TIMEOUT = 120  # the notebook panel shown and its kernel idle
SETTLE = 2.0  # how long the ready state must hold (metadata updates land right after the kernel connects)
SAVE_TIMEOUT = 30
MENU_TIMEOUT = 15
RUN_START_TIMEOUT = 60
#: Run All, per notebook: vtab trains a mini run (~90 s alone on 2 cores, more on a busy machine).
RUN_TIMEOUT = {"vtab.ipynb": 660, "results.ipynb": 180}
SERVER_STOP_TIMEOUT = 20
#: A cell that draws: its source calls plot…(…) (not `def plot…(`) or plt.…(…).
PLOT_CALL = re.compile(r"(?<!def )\bplot\w*\s*\(|\bplt\.\w+\s*\(")


# ----- helpers -----
def _log(msg: str) -> None:
    print(f"[browser] {msg}", flush=True)


def wait_until(condition, timeout: float, what: str, interval: float = 0.5):
    """Poll `condition()` until it returns something truthy (returned) or `timeout` s pass (AssertionError)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = condition()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def cell_label(nb_name: str, nb: dict, index: int) -> str:
    """'vtab.ipynb cell 14 (`plot_run_curves(result);`)': the cell's index among all cells and its first line."""
    first = next((ln.strip() for ln in source(nb["cells"][index]).splitlines() if ln.strip()), "")
    return f"{nb_name} cell {index} (`{first[:70]}`)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_program(env: str, *names: str) -> str | None:
    candidates = [os.environ.get(env)] + [shutil.which(n) for n in names] + [f"/usr/bin/{n}" for n in names]
    return next((c for c in candidates if c and os.path.isfile(c) and os.access(c, os.X_OK)), None)


def describe_save_difference(committed: bytes, saved: bytes) -> list[str]:
    """What JupyterLab's save changed, in words: trailing newline, formatting, metadata keys, cells."""
    notes = []
    ends_a, ends_b = committed.endswith(b"\n"), saved.endswith(b"\n")
    if ends_a != ends_b:
        notes.append(f"trailing newline: the committed file {'ends' if ends_a else 'does not end'} with one, "
                     f"JupyterLab's save {'adds' if ends_b else 'drops'} it")
    try:
        a, b = json.loads(committed), json.loads(saved)
    except ValueError as exc:
        return notes + [f"not comparable as JSON: {exc}"]
    if a == b:
        if committed.rstrip(b"\n") != saved.rstrip(b"\n"):
            notes.append("same JSON, different text: formatting (indentation, key order or escaping)")
        return notes
    for key in sorted(set(a) | set(b)):
        if key not in ("metadata", "cells") and a.get(key) != b.get(key):
            notes.append(f"{key}: {a.get(key)!r} -> {b.get(key)!r}")
    ma, mb = a.get("metadata", {}), b.get("metadata", {})
    for key in sorted(set(ma) | set(mb)):
        if ma.get(key) != mb.get(key):
            notes.append(f"metadata.{key}: {json.dumps(ma.get(key))[:200]} -> {json.dumps(mb.get(key))[:200]}")
    ca, cb = a.get("cells", []), b.get("cells", [])
    if len(ca) != len(cb):
        notes.append(f"number of cells: {len(ca)} -> {len(cb)}")
    for i, (x, y) in enumerate(zip(ca, cb)):
        if x == y:
            continue
        keys = sorted(k for k in set(x) | set(y) if x.get(k) != y.get(k))
        detail = ""
        if "outputs" in keys:
            kinds = lambda c: [o.get("name") or o["output_type"] for o in c.get("outputs", [])]  # noqa: E731
            detail = f" (outputs {len(x.get('outputs', []))} -> {len(y.get('outputs', []))}: " \
                     f"{kinds(x)[:4]}… -> {kinds(y)[:4]}…)"
        notes.append(f"cell {i}: {', '.join(keys)} differ{detail}")
    return notes


# ----- the temporary work folder, the server, the browser -----
@dataclass
class Lab:
    url: str
    token: str
    root: Path
    shots: Path
    tmp: Path
    chromium: str
    chromedriver: str

    def api(self, method: str, path: str, timeout: float = 10):
        req = urllib.request.Request(f"{self.url}{path}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body = r.read()
        return json.loads(body) if body else None

    def fresh_copy(self, name: str) -> bytes:
        """Copy the committed notebook into the work folder again (a test before may have saved it)."""
        data = (REPO / "notebooks" / name).read_bytes()
        (self.root / "notebooks" / name).write_bytes(data)
        return data

    def forget_old_outputs(self, name: str) -> None:
        """Remove what an earlier run left for this notebook (failure screenshots, a saved copy)."""
        stem = Path(name).stem
        for old in (f"FAILED_open_{stem}.png", f"FAILED_run_{stem}.png", f"saved_by_jupyterlab/{name}"):
            (self.shots / old).unlink(missing_ok=True)

    def shutdown_kernels(self, name: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            for s in self.api("GET", "/api/sessions"):
                if s.get("path", "").endswith(f"notebooks/{name}"):
                    self.api("DELETE", f"/api/sessions/{s['id']}")


def layout(root: Path) -> None:
    (root / "notebooks").mkdir(parents=True)
    for nb in NOTEBOOKS:
        shutil.copy2(REPO / "notebooks" / nb, root / "notebooks" / nb)
    for name in ("pyproject.toml", "shiplib", "data"):  # read only: symlinks
        if (REPO / name).exists():
            (root / name).symlink_to(REPO / name)
    if (REPO / "results").is_dir():  # small; a copy, so that no notebook can write into the committed results
        shutil.copytree(REPO / "results", root / "results", symlinks=False)
    (root / "runs").mkdir()
    # Notebooks write the README figures to docs/figures/ (relative to the root): a copy of the committed ones
    # (some notebooks compare against them), so the repository's files are never touched.
    if (REPO / "docs" / "figures").is_dir():
        shutil.copytree(REPO / "docs" / "figures", root / "docs" / "figures", symlinks=False)
    else:
        (root / "docs" / "figures").mkdir(parents=True)
    from shiplib.report.notebook import find_repo_root

    found = find_repo_root(root / "notebooks")
    assert found == root.resolve(), f"setup_notebook() would work from {found}, not the work folder {root}"


def jupyter_env(tmp: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "JPY_", "MPLBACKEND", "IPYTHON"))}
    # the data folder (kernelspecs) stays the user's: the notebooks must run on the kernel setup registered
    env.update(JUPYTER_CONFIG_DIR=str(tmp / "jupyter_config"), JUPYTER_RUNTIME_DIR=str(tmp / "jupyter_runtime"),
               IPYTHONDIR=str(tmp / "ipython"), JUPYTER_PLATFORM_DIRS="0", PYTHONUNBUFFERED="1")
    # JupyterLab user settings: no news/update checks (no internet; their toast would cover the page), and all
    # cells attached to the DOM (windowing off) so that every cell's prompt and outputs can be read.
    settings = tmp / "jupyter_config" / "lab" / "user-settings" / "@jupyterlab"
    for rel, values in {"apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
                        "notebook-extension/tracker": {"windowingMode": "none"}}.items():
        path = settings / f"{rel}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    return env


def kernel_from_setup(env: dict) -> None:
    """The kernel "shiplib" as scripts/setup.sh registered it (inside .venv, and for the user: the real kernelspec
    folders, not a temporary one) must start this venv's python, so that the notebooks run this clone's code."""
    specs = json.loads(subprocess.run([sys.executable, "-m", "jupyter", "kernelspec", "list", "--json"], env=env,
                                      check=True, capture_output=True, text=True, timeout=60).stdout)["kernelspecs"]
    assert KERNEL_NAME in specs, (f"kernel {KERNEL_NAME!r} is not registered ({sorted(specs)}): run "
                                  "scripts/setup.sh first")
    argv0 = specs[KERNEL_NAME]["spec"]["argv"][0]
    assert Path(argv0) == Path(sys.executable), (f"kernel {KERNEL_NAME!r} starts {argv0}, not this venv's "
                                                 f"{sys.executable}: run scripts/setup.sh in this clone")
    names = ", ".join(f"{k} ({v['spec']['display_name']}: {v['resource_dir']})" for k, v in sorted(specs.items()))
    _log(f"kernels: {names}")


def stop_server(proc: subprocess.Popen, lab: Lab | None) -> None:
    if proc.poll() is None and lab is not None:
        with contextlib.suppress(OSError, ValueError):
            lab.api("POST", "/api/shutdown", timeout=5)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(SERVER_STOP_TIMEOUT)
    for sig in (signal.SIGTERM, signal.SIGKILL):  # the server's own process group (it and its kernels)
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    chromium = find_program("SHIPLIB_CHROMIUM", "chromium", "chromium-browser")
    chromedriver = find_program("SHIPLIB_CHROMEDRIVER", "chromedriver")
    if not (chromium and chromedriver):
        missing = " and ".join(n for n, p in (("chromium", chromium), ("chromedriver", chromedriver)) if not p)
        reason = f"{missing} not found: run scripts/install_browser.sh (apt-get install chromium chromium-driver)"
        _log(f"SKIP: {reason}")
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("jupyterlab")
    root = tmp / "work"
    layout(root)
    env = jupyter_env(tmp)
    kernel_from_setup(env)
    port, token = free_port(), secrets.token_hex(16)
    lab_cmd = [str(Path(sys.executable).with_name("jupyter-lab"))]
    if not os.access(lab_cmd[0], os.X_OK):
        lab_cmd = [sys.executable, "-m", "jupyterlab"]
    cmd = [*lab_cmd, "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
           "--ServerApp.port_retries=0", f"--ServerApp.token={token}", f"--ServerApp.root_dir={root}",
           "--ServerApp.open_browser=False", "--ServerApp.terminals_enabled=False",
           "--LabApp.extension_manager=readonly",  # no PyPI look-ups for the extension manager
           "--LabApp.expose_app_in_browser=True"]  # window.jupyterapp: read the models for clearer messages
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log_path = tmp / "jupyterlab.log"
    shots = SCREENSHOTS
    shots.mkdir(parents=True, exist_ok=True)
    _log(f"screenshots: {shots}")
    _log(f"work folder: {root}; server log: {log_path}")
    t0 = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    lab = Lab(f"http://127.0.0.1:{port}", token, root, shots, tmp, chromium, chromedriver)
    try:
        def up():
            if proc.poll() is not None:
                raise AssertionError(f"JupyterLab exited with {proc.returncode}:\n"
                                     + log_path.read_text(errors="replace")[-3000:])
            with contextlib.suppress(OSError, ValueError):
                return lab.api("GET", "/api/status", timeout=3) is not None
            return False

        wait_until(up, SERVER_START_TIMEOUT, "JupyterLab's /api/status", interval=0.5)
        _log(f"JupyterLab up on port {port} in {time.monotonic() - t0:.1f} s")
        yield lab
    finally:
        stop_server(proc, lab)
        _log(f"JupyterLab stopped (exit code {proc.returncode})")


@contextlib.contextmanager
def browser(lab: Lab):
    """A fresh headless chromium (own profile) per notebook: no state or pending dialog carries over."""
    saved = {k: os.environ.get(k) for k in ("SE_OFFLINE", "SE_AVOID_STATS")}
    os.environ.update(SE_OFFLINE="true", SE_AVOID_STATS="true")  # selenium manager must never download anything
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:
        pytest.fail(f"selenium is not installed in this environment ({exc}): it is in requirements.txt")
    opts = webdriver.ChromeOptions()
    opts.binary_location = lab.chromium
    for flag in CHROME_FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-', dir=lab.tmp)}")
    service = Service(executable_path=lab.chromedriver, log_output=str(lab.tmp / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=opts)
    try:
        # Headless chromium leaves the page unfocused on some machines (document.hasFocus() false, no focus
        # events): JupyterLab then has no current widget, and menus and Ctrl+S act on nothing. A person's
        # browser window has focus; "emulate a focused page" gives the test the same on every machine.
        driver.execute_cdp_cmd("Emulation.setFocusEmulationEnabled", {"enabled": True})
        driver.set_page_load_timeout(60)
        driver.set_script_timeout(30)
        yield driver
    finally:
        driver.quit()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ----- reading JupyterLab's page -----
#: JupyterLab's widget for the notebook named arguments[0], found by its path among the main area's widgets (not
#: by `shell.currentWidget`, which follows keyboard focus and is empty where the browser window has none).
FIND_PANEL_JS = r"""
const findPanel = (name) => {
  const app = window.jupyterapp;
  if (!app) return null;
  for (const w of app.shell.widgets('main'))
    if (w.context && w.sessionContext && w.context.path.endsWith(name)) return w;
  return null;
};
"""

#: The state of the notebook tab named arguments[0]: DOM first (what a person sees), models for diagnosis.
STATE_JS = FIND_PANEL_JS + r"""
const name = arguments[0];
const out = {dialog: null, tab: false, dirtyTab: null, panel: false, indicator: null, kernelLabel: null,
             app: !!window.jupyterapp};
const dialog = document.querySelector('.jp-Dialog');
if (dialog) out.dialog = dialog.innerText.slice(0, 500);
const tab = [...document.querySelectorAll('#jp-main-dock-panel .lm-TabBar-tab')]
    .find(t => (t.querySelector('.lm-TabBar-tabLabel') || {}).textContent === name);
if (tab) { out.tab = true; out.dirtyTab = tab.classList.contains('jp-mod-dirty'); }
const panel = [...document.querySelectorAll('.jp-NotebookPanel')].find(p => !p.classList.contains('lm-mod-hidden'));
if (panel) {
  out.panel = true;
  const ind = panel.querySelector('.jp-Notebook-ExecutionIndicator')
      || document.querySelector('.jp-Notebook-ExecutionIndicator');
  out.indicator = ind ? ind.getAttribute('data-status') : null;
  const kn = panel.querySelector('.jp-KernelName jp-button, .jp-KernelName button, .jp-KernelName');
  out.kernelLabel = kn ? (kn.getAttribute('aria-label') || kn.textContent || '').trim() : null;
  out.prompts = [...panel.querySelectorAll('.jp-Notebook .jp-Cell.jp-CodeCell .jp-InputPrompt')]
      .map(p => p.textContent.trim());
}
const cur = window.jupyterapp && window.jupyterapp.shell.currentWidget;
out.focus = {document: document.hasFocus(), current: cur ? cur.title.label : null};
const w = findPanel(name);
if (w) {
  const k = w.sessionContext.session && w.sessionContext.session.kernel;
  out.model = {ready: w.context.isReady && w.sessionContext.isReady, dirty: w.context.model.dirty,
               kernel: k ? k.name : null, status: k ? k.status : null,
               connection: k ? k.connectionStatus : null};
}
return out;
"""

#: Per cell of the visible notebook (named arguments[0]): kind, prompt, outputs (mime type, text, images), errors
#: in the model.
CELLS_JS = FIND_PANEL_JS + r"""
const panel = [...document.querySelectorAll('.jp-NotebookPanel')].find(p => !p.classList.contains('lm-mod-hidden'));
const cells = [...panel.querySelectorAll('.jp-Notebook .jp-Cell')];
const w = findPanel(arguments[0]);
const models = w && w.content && w.content.model ? [...w.content.model.cells] : [];
return cells.map((c, i) => {
  const code = c.classList.contains('jp-CodeCell');
  const prompt = c.querySelector('.jp-InputPrompt');
  const outputs = [...c.querySelectorAll('.jp-OutputArea-output')].map(o => ({
    mime: o.getAttribute('data-mime-type'), text: (o.innerText || '').slice(0, 3000),
    imgs: [...o.querySelectorAll('img')].map(im => ({complete: im.complete, width: im.naturalWidth}))}));
  let modelErrors = [];
  const m = models[i];
  if (m && m.outputs) {
    for (let j = 0; j < m.outputs.length; j++) {
      const o = m.outputs.get(j);
      if (o.type === 'error') modelErrors.push(((o.toJSON() || {}).ename || 'error'));
    }
  }
  return {code, prompt: prompt ? prompt.textContent.trim() : null, outputs, modelErrors,
          widgetErrors: [...c.querySelectorAll('.jp-OutputArea-output')]
              .filter(o => /Error displaying widget/.test(o.innerText || '')).length};
});
"""


def page_state(driver, name: str) -> dict:
    return driver.execute_script(STATE_JS, name)


#: Scroll the visible notebook to its top; returns how much of it lies below the fold (px).
SCROLL_TOP_JS = r"""
const p = [...document.querySelectorAll('.jp-NotebookPanel')].find(x => !x.classList.contains('lm-mod-hidden'));
const s = p && (p.querySelector('.jp-WindowedPanel-outer') || p.querySelector('.jp-Notebook'));
if (!s) return 0;
s.scrollTop = 0;
return s.scrollHeight - s.clientHeight;
"""


def screenshot(driver, path: Path, full: bool = False) -> Path:
    """Save a PNG; `full`: grow the window to the notebook's scroll height first (JupyterLab scrolls inside)."""
    if full:
        extra = driver.execute_script(SCROLL_TOP_JS) or 0
        driver.set_window_size(WINDOW[0], min(WINDOW[1] + int(extra) + 50, 16000))
        time.sleep(1.0)
        driver.execute_script(SCROLL_TOP_JS)
        time.sleep(1.0)
    try:
        driver.save_screenshot(str(path))
    finally:
        if full:
            driver.set_window_size(*WINDOW)
    return path


def open_notebook(driver, lab: Lab, name: str, committed: dict) -> dict:
    """Open notebooks/<name> in a fresh workspace; wait until the panel is shown, its kernel is connected and
    idle, and that state has held for SETTLE s. Fails at once on a dialog (e.g. a kernel picker)."""
    workspace = f"test-{secrets.token_hex(4)}"
    driver.get(f"{lab.url}/lab/workspaces/{workspace}/tree/notebooks/{name}?token={lab.token}")
    held = {"since": None}
    want_kernel = committed["metadata"].get("kernelspec", {}).get("name")

    def ready():
        st = page_state(driver, name)
        if st["dialog"]:
            screenshot(driver, lab.shots / f"FAILED_open_{Path(name).stem}.png")
            raise AssertionError(f"{name}: JupyterLab shows a dialog while opening the notebook "
                                 f"(declared kernel {want_kernel!r}): {st['dialog']!r}")
        m = st.get("model") or {}
        ok = (st["tab"] and st["panel"] and st["indicator"] == "idle" and m.get("ready")
              and m.get("status") == "idle" and m.get("connection") == "connected")
        if not ok:
            held["since"] = None
            return None
        held["since"] = held["since"] or time.monotonic()
        return st if time.monotonic() - held["since"] >= SETTLE else None

    try:
        return wait_until(ready, PAGE_READY_TIMEOUT, f"{name} to open with its kernel idle")
    except AssertionError as exc:
        screenshot(driver, lab.shots / f"FAILED_open_{Path(name).stem}.png")
        raise AssertionError(f"{exc}; last state: {page_state(driver, name)}") from None


def focus_notebook(driver, name: str) -> None:
    """Click the notebook's tab, as a person does before using a menu or a shortcut on it, and wait until
    JupyterLab takes it as the current widget (menus and Ctrl+S act on that one)."""
    from selenium.webdriver.common.by import By

    labels = driver.find_elements(By.CSS_SELECTOR, "#jp-main-dock-panel .lm-TabBar-tab .lm-TabBar-tabLabel")
    label = next((e for e in labels if e.text.strip() == name), None)
    if label is None:
        raise AssertionError(f"no tab named {name!r}; tabs: {[e.text for e in labels]}")
    label.click()
    try:
        wait_until(lambda: page_state(driver, name)["focus"]["current"] == name, MENU_TIMEOUT,
                   f"{name} to become JupyterLab's current widget after a click on its tab")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; focus: {page_state(driver, name)['focus']}") from None


def use_menu(driver, top: str, command: str) -> None:
    """Click the main menu `top` (e.g. 'Run'), then its item for `command` (e.g. 'runmenu:run-all')."""
    from selenium.webdriver.common.by import By

    labels = lambda: driver.find_elements(By.CSS_SELECTOR, "#jp-MainMenu .lm-MenuBar-itemLabel")  # noqa: E731
    label = wait_until(lambda: next((e for e in labels() if e.text.strip() == top), None), MENU_TIMEOUT,
                       f"the menu {top!r}")
    label.click()
    item = wait_until(lambda: next((e for e in driver.find_elements(
        By.CSS_SELECTOR, f".lm-Menu-item[data-command='{command}']") if e.is_displayed()), None),
        MENU_TIMEOUT, f"the item {command!r} in the menu {top!r}")
    item.click()
    wait_until(lambda: not any(e.is_displayed() for e in driver.find_elements(By.CSS_SELECTOR, ".lm-Menu")),
               MENU_TIMEOUT, f"the menu {top!r} to close")


# ----- the tests -----
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_opens_clean(lab, name):
    """Opens without a dialog on its declared kernel, is not modified by opening, and saves byte-identically."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    t0 = time.monotonic()
    lab.forget_old_outputs(name)
    committed_bytes = lab.fresh_copy(name)
    committed = json.loads(committed_bytes)
    path = lab.root / "notebooks" / name
    stem = Path(name).stem
    problems = []
    with browser(lab) as driver:
        try:
            st = open_notebook(driver, lab, name, committed)
            shot = screenshot(driver, lab.shots / f"open_{stem}.png")
            want = committed["metadata"].get("kernelspec", {})
            if st["model"]["kernel"] != want.get("name"):
                problems.append(f"runs on kernel {st['model']['kernel']!r}, not its declared {want.get('name')!r}")
            if st["dirtyTab"]:
                changed = driver.execute_script(
                    FIND_PANEL_JS + "return findPanel(arguments[0]).context.model.toJSON().metadata;", name)
                meta = committed["metadata"]
                diff = {k: (meta.get(k), changed.get(k)) for k in sorted(set(meta) | set(changed))
                        if meta.get(k) != changed.get(k)}
                problems.append("marked modified (tab has jp-mod-dirty) right after opening, before any edit; "
                                f"notebook metadata JupyterLab changed (committed -> in JupyterLab): {diff}")

            # Save the way a person does (Ctrl+S on the notebook), then compare the file with the committed one.
            before = path.stat().st_mtime_ns
            focus_notebook(driver, name)
            ActionChains(driver).key_down(Keys.CONTROL).send_keys("s").key_up(Keys.CONTROL).perform()
            wait_until(lambda: path.stat().st_mtime_ns != before and page_state(driver, name)["dirtyTab"] is False,
                       SAVE_TIMEOUT, f"{name} to be saved by Ctrl+S")
            saved = path.read_bytes()
            if saved != committed_bytes:
                keep = lab.shots / "saved_by_jupyterlab" / name
                keep.parent.mkdir(parents=True, exist_ok=True)
                keep.write_bytes(saved)
                diff = "; ".join(describe_save_difference(committed_bytes, saved)) or "?"
                problems.append(f"JupyterLab's save is not byte-identical to the committed file "
                                f"({len(committed_bytes)} -> {len(saved)} bytes; saved copy: {keep}): {diff}")
        except Exception:
            screenshot(driver, lab.shots / f"FAILED_open_{stem}.png")
            raise
        finally:
            lab.shutdown_kernels(name)
    _log(f"{name}: opened and saved in {time.monotonic() - t0:.1f} s; screenshot {shot}"
         + (f"; {len(problems)} problem(s)" if problems else ""))
    assert not problems, f"{name}:\n  - " + "\n  - ".join(problems)


SET_PARAMETERS_JS = FIND_PANEL_JS + r"""
const w = findPanel(arguments[0]);
const cells = w.content.model.cells;
for (let i = 0; i < cells.length; i++) {
  const c = cells.get(i);
  if ((c.getMetadata('tags') || []).includes('parameters')) { c.sharedModel.setSource(arguments[1]); return i; }
}
return -1;
"""


def run_all(lab: Lab, name: str, stem: str, parameters: str | None = None) -> tuple[list, Path, float]:
    """In a fresh copy of `name`: optionally replace the parameters cell's text (as a person edits it), Clear
    Outputs of All Cells, Run All Cells from the menus and wait until the kernel is idle; the cells as the DOM shows
    them, a screenshot and the seconds Run All took."""
    lab.forget_old_outputs(name)
    committed = json.loads(lab.fresh_copy(name))
    with browser(lab) as driver:
        try:
            open_notebook(driver, lab, name, committed)
            focus_notebook(driver, name)
            if parameters is not None:
                assert driver.execute_script(SET_PARAMETERS_JS, name, parameters) >= 0, f"{name}: no parameters cell"
            use_menu(driver, "Edit", "editmenu:clear-all")
            wait_until(lambda: all(p == "[ ]:" for p in page_state(driver, name)["prompts"]), MENU_TIMEOUT,
                       f"{name}: every prompt to read [ ]: after Clear Outputs of All Cells")
            use_menu(driver, "Run", "runmenu:run-all")
            started = time.monotonic()

            def running():
                st = page_state(driver, name)
                return st if ("[*]:" in st["prompts"] or (st.get("model") or {}).get("status") == "busy"
                              or all(p != "[ ]:" for p in st["prompts"])) else None

            wait_until(running, RUN_START_TIMEOUT, f"{name}: Run All Cells to start", interval=0.2)
            calm = {"n": 0}

            def finished():
                st = page_state(driver, name)
                m = st.get("model") or {}
                if st["dialog"]:
                    raise AssertionError(f"{name}: a dialog appeared during Run All: {st['dialog']!r}")
                if m.get("status") == "dead":
                    raise AssertionError(f"{name}: the kernel is {m.get('status')} during Run All")
                idle = "[*]:" not in st["prompts"] and m.get("status") == "idle" and st["indicator"] == "idle"
                calm["n"] = calm["n"] + 1 if idle else 0
                return st if calm["n"] >= 3 else None  # idle, nothing queued, over three polls in a row

            try:
                wait_until(finished, RUN_TIMEOUT[name], f"{name}: Run All Cells to finish", interval=1.0)
            finally:
                ran = time.monotonic() - started
            time.sleep(1.0)  # the last display messages render
            dom_cells = driver.execute_script(CELLS_JS, name)
            shot = screenshot(driver, lab.shots / f"run_{stem}.png", full=True)
        except Exception:
            screenshot(driver, lab.shots / f"FAILED_run_{stem}.png", full=True)
            raise
        finally:
            lab.shutdown_kernels(name)
    return dom_cells, shot, ran


def test_a_user_error_in_the_browser_is_one_line(lab):
    """vtab.ipynb with task = "svhn" (no VTAB-1k data offline), edited in the parameters cell and Run All: the run
    stops in the training cell with the one-line MissingDataError that says how to get the data, no traceback."""
    committed = json.loads(lab.fresh_copy("vtab.ipynb"))
    params = next(source(c) for c in committed["cells"] if "parameters" in c["metadata"].get("tags", []))
    edited = re.sub(r'^task = "[^"]*"', 'task = "svhn"', params, flags=re.M)
    assert edited != params
    dom_cells, shot, _ = run_all(lab, "vtab.ipynb", "vtab_svhn", edited)
    errors = [o["text"].strip() for dom in dom_cells for o in dom["outputs"]
              if o["mime"] == "application/vnd.jupyter.stderr" and "Error" in o["text"]]
    assert errors, f"no error shown (screenshot {shot})"
    first = errors[0]
    assert first.startswith("MissingDataError: ") and "Traceback" not in first and "\n" not in first, first[:2000]
    assert 'data_root="DIR"' in first and "svhn" in first


@pytest.mark.parametrize("name", RUN_NOTEBOOKS)
def test_run_all_in_browser(lab, name):
    """Clear all outputs, Run All Cells from the menu, then: all executed, no error, every plot rendered."""
    t0 = time.monotonic()
    committed = json.loads(lab.fresh_copy(name))
    stem = Path(name).stem
    cells = committed["cells"]
    plot_cells = {i for i, c in enumerate(cells) if c["cell_type"] == "code" and (
        PLOT_CALL.search(source(c)) or any("image/png" in o.get("data", {}) for o in c.get("outputs", [])))}
    dom_cells, shot, ran = run_all(lab, name, stem)

    assert len(dom_cells) == len(cells), \
        f"{name}: JupyterLab shows {len(dom_cells)} cells, the notebook has {len(cells)}"
    problems, counts = [], []
    for i, (cell, dom) in enumerate(zip(cells, dom_cells)):
        if cell["cell_type"] != "code":
            continue
        where = cell_label(name, committed, i)
        m = re.fullmatch(r"\[(\d+)\]:", dom["prompt"] or "")
        if not m:
            problems.append(f"{where}: not executed (prompt {dom['prompt']!r})")
        else:
            counts.append(int(m.group(1)))
        tracebacks = [o["text"] for o in dom["outputs"] if o["mime"] == "application/vnd.jupyter.stderr"
                      and re.search(r"Traceback|^\w+(Error|Exception)\b", o["text"], re.M)]
        if tracebacks or dom["modelErrors"]:
            text = (tracebacks or [""])[0].strip().splitlines()
            problems.append(f"{where}: error output {dom['modelErrors'] or ''} {' | '.join(text[-3:])[:400]}")
        if dom["widgetErrors"]:
            problems.append(f"{where}: {dom['widgetErrors']} widget(s) failed to display")
        if i in plot_cells and not any(im["complete"] and im["width"] > 0 for o in dom["outputs"] for im in o["imgs"]):
            problems.append(f"{where}: draws a plot but rendered no image "
                            f"(outputs: {[o['mime'] for o in dom['outputs']]})")
    if counts and counts != sorted(counts):
        problems.append(f"{name}: execution counts out of order: {counts}")
    _log(f"{name}: Run All took {ran:.1f} s (test {time.monotonic() - t0:.1f} s); {len(counts)} code cells ran, "
         f"{len(plot_cells)} plot cell(s); screenshot {shot}")
    assert not problems, f"{name} after Run All Cells in JupyterLab:\n  - " + "\n  - ".join(problems)
