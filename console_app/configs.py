"""Workflow configs (admins only): list, create, edit every option, activate or deactivate,
rotate the webhook secret.

The form is turned into the same body the admin API takes and validated by the same action
(zapreply.actions.configs), so the console cannot store what the API would refuse; an error
is shown next to the field it names. Secrets (the messages-API token, the HMAC key) are never
shown again: a blank field keeps the stored one.
"""

from __future__ import annotations

import json
import re
from typing import Any

from flask import Blueprint, Response, flash, redirect, render_template, request, url_for

from console_app import context
from console_app.auth import actor, admin_only
from zapreply.actions import configs as config_actions
from zapreply.actions.errors import Invalid
from zapreply.rules import configs
from zapreply.rules.options import DEFAULTS, DEFINITIONS
from zapreply.storage.db import session_scope
from zapreply.storage.models import WorkflowConfig

bp = Blueprint("configs", __name__, url_prefix="/configs")
bp.before_request(admin_only(lambda: None))

# The field an action's message names: "'send.base_url' must…", "option 'x' must…".
_NAMED = re.compile(r"^(?:option |unknown option )?'([a-z_.]+)'")
_FIELD_OF = {"send.base_url": "base_url", "send.token": "token", "send.driver": "driver"}


@bp.get("")
def index() -> str:
    with session_scope() as session:
        rows = config_actions.list_configs(session)
        return render_template("configs.html", rows=rows, public_url=context.settings().public_url,
                               webhook_path=configs.webhook_path)


@bp.route("/new", methods=["GET", "POST"])
def create() -> Any:
    if request.method == "GET":
        return _form(None, _values(None), {})
    values = dict(request.form)
    try:
        body = _body(values, stored=None)
        with session_scope() as session:
            config_id = config_actions.create_config(session, body, actor=actor()).id
    except Invalid as exc:
        return _form(None, values, _field_error(exc.message), status=400)
    flash("Config created. Give WuzAPI its webhook URL below.")
    return redirect(url_for("configs.edit", config_id=config_id), code=303)


@bp.route("/<int:config_id>", methods=["GET", "POST"])
def edit(config_id: int) -> Any:
    with session_scope() as session:
        config = config_actions.get_config(session, config_id)
    if request.method == "GET":
        return _form(config, _values(config), {})
    values = dict(request.form)
    try:
        body = _body(values, stored=config.options or {})
        with session_scope() as session:
            config = config_actions.update_config(session, config_id, body, actor=actor())
    except Invalid as exc:
        return _form(config, values, _field_error(exc.message), status=400)
    flash("Config saved.")
    return redirect(url_for("configs.edit", config_id=config_id), code=303)


@bp.post("/<int:config_id>/active")
def set_active(config_id: int) -> Response:
    active = request.form.get("active")
    if active not in ("true", "false"):
        raise Invalid("'active' must be true or false")
    with session_scope() as session:
        config_actions.update_config(session, config_id, {"is_active": active == "true"},
                                     actor=actor())
    flash("Config activated." if active == "true" else "Config deactivated.")
    return redirect(url_for("configs.index"), code=303)


@bp.route("/<int:config_id>/rotate-secret", methods=["GET", "POST"])
def rotate_secret(config_id: int) -> Any:
    """GET asks to confirm; POST gives the config a new webhook secret and shows the new URL
    on the page it answers with (not a redirect: a reload does not rotate again)."""
    with session_scope() as session:
        config = config_actions.get_config(session, config_id)
        if request.method == "GET":
            return render_template("config_rotate.html", config=config, webhook_url=None)
        if request.form.get("confirm") != "yes":
            raise Invalid("tick the box to confirm that the old webhook URL stops working")
        config = config_actions.rotate_webhook_secret(session, config_id, actor=actor())
        url = context.settings().public_url + configs.webhook_path(config)
        return render_template("config_rotate.html", config=config, webhook_url=url)


def _form(config: WorkflowConfig | None, values: dict[str, Any], errors: dict[str, str],
          status: int = 200) -> Any:
    url = None
    if config is not None and configs.webhook_path(config):
        url = context.settings().public_url + configs.webhook_path(config)
    page = render_template("config_form.html", config=config, values=values, errors=errors,
                           options=_option_fields(), webhook_url=url,
                           drivers=configs.DRIVERS)
    return page, status


def _option_fields() -> list[dict[str, Any]]:
    found = []
    for name, definition in DEFINITIONS.items():
        types = definition.metadata["types"]
        kind = "select" if definition.metadata["choices"] or types == (bool,) else \
            "json" if (list in types or dict in types) and str not in types else "text"
        choices = list(definition.metadata["choices"]) or (["true", "false"]
                                                          if types == (bool,) else [])
        found.append({"name": name, "doc": definition.metadata["doc"], "kind": kind,
                      "choices": choices, "default": _shown(DEFAULTS[name])})
    return found


def _values(config: WorkflowConfig | None) -> dict[str, str]:
    """The form's fields as text: stored values, defaults for what is not stored."""
    if config is None:
        values = {"name": "", "instance": "", "model": "", "system_prompt": "", "driver": "wuzapi",
                  "base_url": "", "debounce_seconds": "2", "is_active": "on"}
        options: dict[str, Any] = {}
    else:
        send = config.send or {}
        values = {"name": config.name, "instance": config.instance, "model": config.model,
                  "system_prompt": config.system_prompt, "driver": send.get("driver", ""),
                  "base_url": send.get("base_url", ""),
                  "debounce_seconds": f"{config.debounce_seconds:g}",
                  "is_active": "on" if config.is_active else ""}
        options = configs.public_view(config)["options"]
    for name in DEFINITIONS:
        values[f"opt.{name}"] = _shown(options.get(name, DEFAULTS[name]))
    return values


def _shown(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _body(values: dict[str, str], *, stored: dict[str, Any] | None) -> dict[str, Any]:
    """The admin API's body for the form's values. `stored`: the config's options (None when
    creating one); an option is sent when it differs from its default or was stored, so
    defaults left alone stay defaults."""
    creating = stored is None
    body: dict[str, Any] = {name: values.get(name, "").strip()
                            for name in ("name", "instance", "model")}
    body["system_prompt"] = values.get("system_prompt", "")
    body["is_active"] = values.get("is_active") == "on"
    raw = values.get("debounce_seconds", "").strip()
    try:
        body["debounce_seconds"] = float(raw)
    except ValueError:
        raise Invalid("'debounce_seconds' must be a number from 0 to 60") from None
    token = values.get("token", "")
    if creating and not token:
        raise Invalid("'send.token' is required: the messages API's token for this instance")
    body["send"] = {"driver": values.get("driver", ""),
                    "base_url": values.get("base_url", "").strip(),
                    "token": token or configs.MASK}
    if values.get("hmac_key"):
        body["hmac_key"] = values["hmac_key"]
    elif values.get("remove_hmac_key") == "on":
        body["hmac_key"] = None
    options: dict[str, Any] = {}
    for name in DEFINITIONS:
        if f"opt.{name}" not in values:
            continue  # a form without the field leaves the option as it is
        parsed = _parsed(name, values[f"opt.{name}"])
        if parsed != DEFAULTS[name] or name in (stored or {}):
            options[name] = parsed
    body["options"] = options
    return body


def _parsed(name: str, raw: str) -> Any:
    raw = raw.strip()
    if not raw:
        return None
    types = DEFINITIONS[name].metadata["types"]
    if types == (str,) or (str in types and not raw.startswith(("[", "{"))):
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        raise Invalid(f"option '{name}' must be JSON here (a number, true/false, a list "
                      "in [ ] or an object in { })") from None


def _field_error(message: str) -> dict[str, str]:
    found = _NAMED.match(message)
    name = found.group(1) if found else ""
    field = _FIELD_OF.get(name) or (f"opt.{name}" if name in DEFINITIONS else name) or "form"
    return {field: message}
