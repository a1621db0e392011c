"""The README's first run: `zapreply up` on the embedded defaults (SQLite database, SQLite
broker; no PostgreSQL, no Redis), a config made with the CLI, a WhatsApp message answered."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import httpx

from tests.conftest import ROOT, fixture_bytes
from tests.processes import free_port, wait_until_answering

ZAPREPLY = [sys.executable, "-m", "zapreply.cli"]


def _env(tmp_path, llm) -> dict[str, str]:  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "CELERY_BROKER_URL", "ADMIN_TOKEN", "WUZAPI_HMAC_KEY"}}
    env.update({
        "ZAPREPLY_DATA_DIR": str(tmp_path / "var"),
        "OPENAI_BASE_URL": f"{llm.url}/v1",
        "OPENAI_API_KEY": "sk-test-not-a-real-key",
        "PYTHONPATH": str(ROOT),
    })
    return env


def test_zapreply_up_answers_a_message_on_the_embedded_defaults(tmp_path, llm, wuzapi):
    llm.reset()
    wuzapi.reset()
    env = _env(tmp_path, llm)
    port, console_port = free_port(), free_port()
    env["PUBLIC_URL"] = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "up.log", "wb")
    up = subprocess.Popen([*ZAPREPLY, "up", "--port", str(port), "--console-port",
                           str(console_port)], cwd=tmp_path, env=env,
                          stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_answering(f"{url}/readyz", up, timeout=60,
                             log=lambda: (tmp_path / "up.log").read_text())

        created = subprocess.run(
            [*ZAPREPLY, "config", "create", "--name", "Loja", "--instance", "loja-teste",
             "--model", "openai/stub-model", "--system-prompt", "Seja breve.",
             "--debounce", "0", "--driver", "wuzapi", "--base-url", wuzapi.url,
             "--token", "secret-user-token"],
            cwd=tmp_path, env=env, capture_output=True, text=True, check=True,
        )
        assert json.loads(created.stdout)["send"]["token"] == "********"
        assert "secret-user-token" not in created.stdout

        # The URL the CLI printed, secret path included: what an operator gives WuzAPI.
        [webhook_url] = re.findall(r"Webhook URL for WuzAPI \(instance loja-teste\): (\S+)",
                                   created.stderr)
        assert webhook_url.startswith(f"{url}/webhooks/wuzapi/loja-teste/")
        unsigned = httpx.post(
            f"{url}/webhooks/wuzapi", content=fixture_bytes("message_text.form.txt"),
            headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=10,
        )
        assert unsigned.status_code == 401
        response = httpx.post(
            webhook_url,
            content=fixture_bytes("message_text.form.txt"),
            headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=10,
        )
        assert response.json()["status"] == "queued"
        sent = wuzapi.wait_for(lambda r: len(r) >= 1, timeout=30)
        assert sent[0]["body"]["Body"] == "Resposta: Olá! Vocês abrem amanhã?"
        assert (tmp_path / "var" / "zapreply.storage.db").exists()
        assert (tmp_path / "var" / "broker.db").exists()

        # The first run ends in the console: an operator signs in and finds the conversation.
        subprocess.run([*ZAPREPLY, "operator", "add", "ana", "--role", "admin",
                        "--password-stdin"], input="first-run-password-1\n", cwd=tmp_path,
                       env=env, capture_output=True, text=True, check=True)
        console = f"http://127.0.0.1:{console_port}"
        assert f"Operator console: {console}" in (tmp_path / "up.log").read_text()
        wait_until_answering(f"{console}/login", up, timeout=60,
                             log=lambda: (tmp_path / "up.log").read_text())
        with httpx.Client(base_url=console, timeout=10) as browser:
            assert browser.get("/").status_code == 302  # signed out: to /login
            token = re.search(r'name="csrf_token" value="([^"]+)"',
                              browser.get("/login").text).group(1)
            signed_in = browser.post("/login", data={
                "username": "ana", "password": "first-run-password-1", "csrf_token": token})
            assert signed_in.status_code == 302
            inbox = browser.get("/")
            assert inbox.status_code == 200
            assert "Cliente Teste Um" in inbox.text
            assert "Resposta: Olá! Vocês abrem amanhã?" in browser.get(
                re.search(r'href="(/conversations/\d+)"', inbox.text).group(1)).text
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(timeout=40)
        except subprocess.TimeoutExpired:
            up.kill()
        log.close()
    assert up.returncode == 0, (tmp_path / "up.log").read_text()[-3000:]
