"""The project's JupyterLab settings (scripts/jupyterlab_overrides.json, installed by setup as
`.venv/share/jupyter/lab/settings/overrides.d/shiplib.json`) turn the news notification and the update check off,
read the way the JupyterLab server reads them (jupyterlab_server's settings handler)."""
import json
import shutil
from pathlib import Path

import jsonschema
from jupyterlab.commands import get_app_dir
from jupyterlab_server.settings_utils import get_settings

OVERRIDES = Path(__file__).resolve().parents[1] / "scripts" / "jupyterlab_overrides.json"
PLUGIN = "@jupyterlab/apputils-extension:notification"


def test_the_news_notification_and_update_check_are_off(tmp_path):
    app_settings = tmp_path / "settings"
    (app_settings / "overrides.d").mkdir(parents=True)
    shutil.copy(OVERRIDES, app_settings / "overrides.d" / "shiplib.json")
    (tmp_path / "user").mkdir()
    found, _ = get_settings(str(app_settings), str(Path(get_app_dir()) / "schemas"), str(tmp_path / "user"),
                            schema_name=PLUGIN)
    defaults = {k: p["default"] for k, p in found["schema"]["properties"].items()}
    assert defaults["fetchNews"] == "false" and defaults["checkForUpdates"] is False
    values = json.loads(OVERRIDES.read_text())
    assert list(values) == [PLUGIN]
    jsonschema.validate(values[PLUGIN], found["schema"])  # values the settings editor accepts ("false" = Never)
