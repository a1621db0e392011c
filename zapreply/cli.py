"""`zapreply` command line: first run, schema, configs, conversations and console operators."""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The actor recorded in the events of what an operator does from the command line.
OPERATOR = "operator"


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def migrate(_: argparse.Namespace | None = None) -> int:
    from alembic import command
    from alembic.config import Config

    from zapreply.settings import get_settings
    from zapreply.storage.db import ensure_data_dir

    settings = get_settings()
    ensure_data_dir()
    config = Config(str(_alembic_ini()))
    config.attributes["configure_logging"] = False
    command.upgrade(config, "head")
    print(f"database at head: {_safe_url(settings.database_url)}", file=sys.stderr)
    return 0


def _alembic_ini() -> Path:
    """alembic.ini of the working directory (a deployment) or of the source tree."""
    for candidate in (Path.cwd() / "alembic.ini", ROOT / "alembic.ini"):
        if candidate.is_file():
            return candidate
    raise SystemExit("alembic.ini not found: run from the directory that holds it")


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def up(args: argparse.Namespace) -> int:
    """Migrate, then run the receiver, a worker and the console until interrupted."""
    from zapreply.settings import get_settings

    settings = get_settings()
    migrate()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # Children read the same settings; pin the resolved data dir so relative paths agree.
    env.setdefault("ZAPREPLY_DATA_DIR", str(settings.data_dir))
    commands = {
        "receiver": [sys.executable, "-m", "gunicorn", "--bind", f"{args.host}:{args.port}",
                     "--workers", str(args.web_workers), "--access-logfile", "-",
                     "--log-level", settings.log_level.lower(),
                     "webhook_app:create_app()"],
        "worker": [sys.executable, "-m", "celery", "-A", "worker", "worker",
                   "--loglevel", settings.log_level],
        "console": [sys.executable, "-m", "gunicorn", "--bind",
                    f"{args.host}:{args.console_port}", "--workers", "1",
                    "--access-logfile", "-", "--log-level", settings.log_level.lower(),
                    "console_app:create_app()"],
    }
    processes = {name: subprocess.Popen(cmd, cwd=ROOT, env=env) for name, cmd in commands.items()}
    print(f"zapreply is up on http://{args.host}:{args.port} (database "
          f"{_safe_url(settings.database_url)}); `zapreply config create` prints each config's "
          "webhook URL. Ctrl-C stops it.", file=sys.stderr)
    print(f"Operator console: http://{args.host}:{args.console_port} (first operator: "
          "`zapreply operator add NAME --role admin --password-stdin`)", file=sys.stderr)

    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    exit_code = 0
    try:
        while not stopping:
            for name, process in processes.items():
                if process.poll() is not None:
                    print(f"{name} exited with {process.returncode}; stopping", file=sys.stderr)
                    exit_code = process.returncode or 1
                    stopping = True
            time.sleep(0.2)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
    return exit_code


def _config_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if args.json:
        text = sys.stdin.read() if args.json == "-" else Path(args.json).read_text()
        body = json.loads(text)
    fields = {"name": args.name, "instance": args.instance, "model": args.model,
              "system_prompt": args.system_prompt, "debounce_seconds": args.debounce}
    body.update({key: value for key, value in fields.items() if value is not None})
    if args.driver or args.base_url or args.token:
        body["send"] = {**body.get("send", {}),
                        **{k: v for k, v in (("driver", args.driver),
                                             ("base_url", args.base_url),
                                             ("token", args.token)) if v is not None}}
    if getattr(args, "inactive", False):
        body["is_active"] = False
    if getattr(args, "hmac_key_stdin", False):
        body["hmac_key"] = sys.stdin.readline().strip() or None
    for item in getattr(args, "option", None) or []:
        key, value = _option(item)
        body.setdefault("options", {})[key] = value
    return body


def _option(item: str) -> tuple[str, Any]:
    """KEY=VALUE: VALUE as JSON if it reads as JSON (numbers, true/false, null, lists,
    objects), else as a plain string; KEY=@file reads the JSON from a file."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--option {item!r}: expected KEY=VALUE")
    if raw.startswith("@"):
        try:
            return key.strip(), json.loads(Path(raw[1:]).read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"--option {key.strip()}: cannot read JSON from {raw[1:]!r}: "
                             f"{exc}") from None
    try:
        return key.strip(), json.loads(raw)
    except ValueError:
        return key.strip(), raw


def _refusals(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """An action's refusal as the CLI reports it: `error: <message>` and exit code 1 for
    something not found or not in a state to do it, 2 for a value to change (a flag's too)."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        from zapreply.actions.errors import ActionError, Invalid

        try:
            return command(args)
        except (ActionError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2 if isinstance(exc, Invalid | ValueError) else 1

    return run


@_refusals
def config_create(args: argparse.Namespace) -> int:
    from zapreply.actions import configs as config_actions
    from zapreply.rules import configs
    from zapreply.storage.db import session_scope

    body = _config_body(args)
    with session_scope() as session:
        view = configs.public_view(config_actions.create_config(session, body))
    _print(view)
    _print_webhook_url(view)
    return 0


def _print_webhook_url(view: dict[str, Any]) -> None:
    from zapreply.settings import get_settings

    print(f"Webhook URL for WuzAPI (instance {view['instance']}): "
          f"{get_settings().public_url}{view['webhook_path']}", file=sys.stderr)


@_refusals
def config_rotate_secret(args: argparse.Namespace) -> int:
    from zapreply.actions import configs as config_actions
    from zapreply.rules import configs
    from zapreply.storage.db import session_scope

    with session_scope() as session:
        view = configs.public_view(config_actions.rotate_webhook_secret(session, args.id))
    _print(view)
    _print_webhook_url(view)
    return 0


def config_list(_: argparse.Namespace) -> int:
    from zapreply.actions import configs as config_actions
    from zapreply.rules import configs
    from zapreply.storage.db import session_scope

    with session_scope() as session:
        _print([configs.public_view(row) for row in config_actions.list_configs(session)])
    return 0


@_refusals
def config_update(args: argparse.Namespace) -> int:
    from zapreply.actions import configs as config_actions
    from zapreply.rules import configs
    from zapreply.storage.db import session_scope

    body = _config_body(args)
    with session_scope() as session:
        view = configs.public_view(config_actions.update_config(session, args.id, body))
    _print(view)
    return 0


@_refusals
def conversation_pause(args: argparse.Namespace) -> int:
    from zapreply.actions import conversations as conversation_actions
    from zapreply.rules import conversations
    from zapreply.storage.db import session_scope
    from zapreply.storage.models import utcnow

    now = utcnow()
    with session_scope() as session:
        conversation = conversation_actions.pause(
            session, args.id, reason=args.reason, minutes=args.minutes, actor=OPERATOR, now=now)
        view = conversations.public_view(conversation, now)
    _print(view)
    return 0


@_refusals
def conversation_resume(args: argparse.Namespace) -> int:
    from zapreply.actions import conversations as conversation_actions
    from zapreply.rules import conversations
    from zapreply.storage.db import session_scope
    from zapreply.storage.models import utcnow

    now = utcnow()
    with session_scope() as session:
        conversation = conversation_actions.resume(session, args.id, actor=OPERATOR, now=now)
        view = conversations.public_view(conversation, now)
    _print(view)
    return 0


@_refusals
def replay(args: argparse.Namespace) -> int:
    from zapreply.actions import replay as replay_module
    from zapreply.broker.queue import REPLY, make_celery
    from zapreply.storage.db import session_scope

    with session_scope() as session:
        conversation_id = replay_module.reopen_run(
            session, args.run_id, actor=OPERATOR).conversation_id
    # Published only once the reopened run is committed, so the worker finds it running.
    make_celery().send_task(REPLY, args=[conversation_id])
    _print({"run_id": args.run_id, "conversation_id": conversation_id, "status": "queued"})
    return 0


def contact_export(args: argparse.Namespace) -> int:
    """Everything stored about a contact, as JSON on stdout."""
    from zapreply.actions import contacts
    from zapreply.actions.errors import ActionError, NotFound
    from zapreply.storage.db import session_scope

    try:
        with session_scope() as session:
            data = contacts.export_contact(session, args.phone)
    except NotFound as exc:
        print(exc, file=sys.stderr)
        return 1
    except ActionError as exc:
        print(f"zapreply: {exc}", file=sys.stderr)
        return 2
    _print(data)
    return 0


def contact_erase(args: argparse.Namespace) -> int:
    from zapreply.actions import contacts, privacy
    from zapreply.actions.errors import ActionError, NotFound

    try:
        # The contact is checked before --yes, so a typo is reported first.
        privacy.parse_contact(args.phone)
        if not args.yes:
            print("erasing cannot be undone: run again with --yes", file=sys.stderr)
            return 2
        counts = contacts.erase_contact(args.phone, actor="cli")
    except NotFound as exc:
        print(exc, file=sys.stderr)
        return 1
    except ActionError as exc:
        print(f"zapreply: {exc}", file=sys.stderr)
        return 2
    _print({"erased": counts})
    return 0


@_refusals
def contact_notes(args: argparse.Namespace) -> int:
    """A contact's notes on an instance; with --set or --clear, replaced."""
    from zapreply.actions import contacts
    from zapreply.storage.db import session_scope

    with session_scope() as session:
        if args.set is not None or args.clear:
            view = contacts.set_notes(session, args.instance, args.phone,
                                      None if args.clear else args.set, actor="cli")
        else:
            view = contacts.notes_of(session, args.instance, args.phone)
    _print(view)
    return 0


@_refusals
def contacts_merge_split(args: argparse.Namespace) -> int:
    """Merge the conversations one person's LID and phone number left apart."""
    from zapreply.actions import contacts

    result = contacts.merge_split(instance=args.instance, actor="cli")
    _print(result)
    # A pair a reply run held is merged by running it again.
    return 3 if result["busy"] else 0


def _password_from_stdin() -> str:
    if sys.stdin.isatty():
        print("password: ", end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().rstrip("\r\n")


@_refusals
def operator_add(args: argparse.Namespace) -> int:
    from zapreply.actions import operators
    from zapreply.storage.db import session_scope

    password = _password_from_stdin()
    with session_scope() as session:
        view = operators.view(operators.add_operator(session, args.name, password, args.role,
                                                     actor=OPERATOR))
    _print(view)
    return 0


def operator_list(_: argparse.Namespace) -> int:
    from zapreply.actions import operators
    from zapreply.storage.db import session_scope

    with session_scope() as session:
        _print([operators.view(row) for row in operators.list_operators(session)])
    return 0


def operator_set_active(args: argparse.Namespace, *, active: bool) -> int:
    from zapreply.actions import operators
    from zapreply.storage.db import session_scope

    with session_scope() as session:
        view = operators.view(operators.set_active(session, args.name, active, actor=OPERATOR))
    _print(view)
    return 0


def _document(args: argparse.Namespace) -> Any:
    """The document a `knowledge add|replace` names: a file, or --title with --content (or
    --content-stdin)."""
    import mimetypes

    from zapreply.actions import documents

    if args.file is not None:
        if args.content is not None or args.content_stdin:
            raise ValueError("give a FILE or --content, not both")
        path = Path(args.file)
        try:
            with path.open("rb") as handle:
                data = handle.read(documents.MAX_UPLOAD_BYTES + 1)
        except OSError as exc:
            raise ValueError(f"cannot read {args.file!r}: {exc.strerror}") from None
        return documents.from_upload(data, filename=path.name,
                                     mimetype=mimetypes.guess_type(path.name)[0],
                                     title=args.title)
    content = sys.stdin.read() if args.content_stdin else args.content
    if content is None:
        raise ValueError("give a FILE, or --title with --content or --content-stdin")
    return documents.from_text(args.title, content)


@_refusals
def knowledge_add(args: argparse.Namespace) -> int:
    from zapreply.actions import knowledge
    from zapreply.storage.db import session_scope

    document = _document(args)
    with session_scope() as session:
        _print(knowledge.shown(session, knowledge.add_document(session, args.config_id,
                                                               document)))
    return 0


@_refusals
def knowledge_add_url(args: argparse.Namespace) -> int:
    from zapreply.actions import documents, knowledge
    from zapreply.storage.db import session_scope

    if args.refresh_hours is None:
        source = documents.from_url(args.url, args.title)
    else:
        source = documents.from_url(args.url, args.title, args.refresh_hours)
    with session_scope() as session:
        _print(knowledge.shown(session, knowledge.add_document(session, args.config_id, source)))
    return 0


@_refusals
def knowledge_refresh(args: argparse.Namespace) -> int:
    from zapreply.actions import knowledge
    from zapreply.storage.db import session_scope

    with session_scope() as session:
        _print(knowledge.shown(session, knowledge.refresh_document(session, args.config_id,
                                                                   args.document_id)))
    return 0


@_refusals
def operator_reset_password(args: argparse.Namespace) -> int:
    from zapreply.actions import operators
    from zapreply.storage.db import session_scope

    password = _password_from_stdin()
    with session_scope() as session:
        view = operators.view(operators.reset_password(session, args.name, password,
                                                       actor=OPERATOR))
    _print(view)
    return 0


@_refusals
def knowledge_replace(args: argparse.Namespace) -> int:
    from zapreply.actions import knowledge
    from zapreply.storage.db import session_scope

    document = _document(args)
    with session_scope() as session:
        _print(knowledge.shown(session, knowledge.replace_document(
            session, args.config_id, args.document_id, document)))
    return 0


@_refusals
def knowledge_list(args: argparse.Namespace) -> int:
    from zapreply.actions import knowledge
    from zapreply.storage.db import session_scope

    with session_scope() as session:
        _print(knowledge.list_documents(session, args.config_id))
    return 0


@_refusals
def knowledge_show(args: argparse.Namespace) -> int:
    from zapreply.actions import knowledge
    from zapreply.storage.db import session_scope

    with session_scope() as session:
        row = knowledge.get_document(session, args.config_id, args.document_id)
        _print(knowledge.shown(session, row, content=True))
    return 0


@_refusals
def knowledge_delete(args: argparse.Namespace) -> int:
    from zapreply.actions import knowledge
    from zapreply.storage.db import session_scope

    with session_scope() as session:
        knowledge.delete_document(session, args.config_id, args.document_id)
    _print({"deleted": args.document_id})
    return 0


@_refusals
def faq_add(args: argparse.Namespace) -> int:
    from zapreply.actions import knowledge
    from zapreply.storage.db import session_scope

    body = {"question": args.question, "answer": args.answer}
    with session_scope() as session:
        _print(knowledge.faq_view(knowledge.add_faq(session, args.config_id, body)))
    return 0


@_refusals
def faq_replace(args: argparse.Namespace) -> int:
    from zapreply.actions import knowledge
    from zapreply.storage.db import session_scope

    body = {"question": args.question, "answer": args.answer}
    with session_scope() as session:
        _print(knowledge.faq_view(knowledge.replace_faq(session, args.config_id, args.faq_id,
                                                        body)))
    return 0


@_refusals
def faq_list(args: argparse.Namespace) -> int:
    from zapreply.actions import knowledge
    from zapreply.storage.db import session_scope

    with session_scope() as session:
        _print([knowledge.faq_view(row) for row in knowledge.list_faq(session, args.config_id)])
    return 0


@_refusals
def faq_delete(args: argparse.Namespace) -> int:
    from zapreply.actions import knowledge
    from zapreply.storage.db import session_scope

    with session_scope() as session:
        knowledge.delete_faq(session, args.config_id, args.faq_id)
    _print({"deleted": args.faq_id})
    return 0


def _knowledge_parsers(commands: Any) -> None:
    knowledge = commands.add_parser(
        "knowledge", help="a config's knowledge base: documents the bot answers from"
    ).add_subparsers(dest="knowledge_command", required=True)

    def document(p: argparse.ArgumentParser) -> None:
        p.add_argument("file", nargs="?", help="a .txt, .md, .pdf, .csv or .html file")
        p.add_argument("--title", help="the document's title (default: the file's name)")
        p.add_argument("--content", help="the document's text, instead of a file")
        p.add_argument("--content-stdin", action="store_true",
                       help="read the document's text from stdin")

    add = knowledge.add_parser("add", help="add a document")
    add.add_argument("config_id", type=int)
    document(add)
    add.set_defaults(func=knowledge_add)
    add_url = knowledge.add_parser(
        "add-url", help="add a document read from an https URL by a worker, again on a schedule")
    add_url.add_argument("config_id", type=int)
    add_url.add_argument("--url", required=True)
    add_url.add_argument("--title", help="the document's title (default: the URL's host and path)")
    add_url.add_argument("--refresh-hours", type=int,
                         help="fetch it again every N hours, 1 to 720 (default 24; 0: once)")
    add_url.set_defaults(func=knowledge_add_url)
    refresh = knowledge.add_parser("refresh", help="fetch a URL document again, now")
    refresh.add_argument("config_id", type=int)
    refresh.add_argument("document_id", type=int)
    refresh.set_defaults(func=knowledge_refresh)
    replace = knowledge.add_parser("replace", help="replace a document's title and text")
    replace.add_argument("config_id", type=int)
    replace.add_argument("document_id", type=int)
    document(replace)
    replace.set_defaults(func=knowledge_replace)
    listing = knowledge.add_parser("list", help="list a config's documents")
    listing.add_argument("config_id", type=int)
    listing.set_defaults(func=knowledge_list)
    show = knowledge.add_parser("show", help="print a document with its text")
    show.add_argument("config_id", type=int)
    show.add_argument("document_id", type=int)
    show.set_defaults(func=knowledge_show)
    remove = knowledge.add_parser("delete", help="delete a document")
    remove.add_argument("config_id", type=int)
    remove.add_argument("document_id", type=int)
    remove.set_defaults(func=knowledge_delete)

    faq = commands.add_parser(
        "faq", help="a config's FAQ: approved answers, searched before the documents"
    ).add_subparsers(dest="faq_command", required=True)
    faq_new = faq.add_parser("add", help="add a question and its approved answer")
    faq_new.add_argument("config_id", type=int)
    faq_new.add_argument("--question", required=True)
    faq_new.add_argument("--answer", required=True)
    faq_new.set_defaults(func=faq_add)
    faq_change = faq.add_parser("replace", help="replace an entry's question and answer")
    faq_change.add_argument("config_id", type=int)
    faq_change.add_argument("faq_id", type=int)
    faq_change.add_argument("--question", required=True)
    faq_change.add_argument("--answer", required=True)
    faq_change.set_defaults(func=faq_replace)
    faq_all = faq.add_parser("list", help="list a config's FAQ entries")
    faq_all.add_argument("config_id", type=int)
    faq_all.set_defaults(func=faq_list)
    faq_remove = faq.add_parser("delete", help="delete an FAQ entry")
    faq_remove.add_argument("config_id", type=int)
    faq_remove.add_argument("faq_id", type=int)
    faq_remove.set_defaults(func=faq_delete)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zapreply", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "up", help="migrate, then run the receiver, a worker and the operator console")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8000)
    run.add_argument("--console-port", type=int, default=8001)
    run.add_argument("--web-workers", type=int, default=2)
    run.set_defaults(func=up)

    commands.add_parser("migrate", help="alembic upgrade head").set_defaults(func=migrate)

    config = commands.add_parser("config", help="workflow configs").add_subparsers(
        dest="config_command", required=True)

    def config_fields(p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", help="a JSON file with the config (- for stdin)")
        p.add_argument("--name")
        p.add_argument("--instance", help="WuzAPI instance name, user id or token")
        p.add_argument("--model", help="litellm model, e.g. openai/gpt-4o-mini")
        p.add_argument("--system-prompt")
        p.add_argument("--debounce", type=float, help="seconds to wait for a burst")
        p.add_argument("--driver", choices=["wuzapi", "livchat"])
        p.add_argument("--base-url")
        p.add_argument("--token", help="messages API token (stored, never shown)")
        p.add_argument("--inactive", action="store_true")
        p.add_argument("--hmac-key-stdin", action="store_true",
                       help="read the instance's WuzAPI HMAC key (32+ characters) from the "
                            "first line of stdin (stored, never shown); an empty line removes it")
        p.add_argument("--option", action="append", metavar="KEY=VALUE",
                       help="set an option (repeatable); VALUE is JSON if it parses "
                            "(30, true, null, [\"a\"], {\"mon\": [\"09:00-18:00\"]}), "
                            "else text; KEY=@file.json reads it from a file")

    create = config.add_parser("create", help="create a workflow config")
    config_fields(create)
    create.set_defaults(func=config_create)
    update = config.add_parser("update", help="change fields of a workflow config")
    update.add_argument("id", type=int)
    config_fields(update)
    update.set_defaults(func=config_update)
    config.add_parser("list", help="list workflow configs").set_defaults(func=config_list)
    rotate = config.add_parser(
        "rotate-secret", help="give a config a new webhook URL (the old one stops working)")
    rotate.add_argument("id", type=int)
    rotate.set_defaults(func=config_rotate_secret)

    conversation = commands.add_parser(
        "conversation", help="pause or resume the bot for a conversation"
    ).add_subparsers(dest="conversation_command", required=True)
    pause = conversation.add_parser("pause")
    pause.add_argument("id", type=int)
    pause.add_argument("--minutes", type=float, help="resume by itself after this long")
    pause.add_argument("--reason", default="paused by operator")
    pause.set_defaults(func=conversation_pause)
    resume = conversation.add_parser("resume")
    resume.add_argument("id", type=int)
    resume.set_defaults(func=conversation_resume)

    contact = commands.add_parser(
        "contact", help="a contact: export or erase their data, show or edit their notes"
    ).add_subparsers(dest="contact_command", required=True)
    export = contact.add_parser("export", help="print everything stored about a contact")
    export.add_argument("phone", help="phone number (+55 11 …, digits) or JID")
    export.set_defaults(func=contact_export)
    erase = contact.add_parser("erase", help="delete everything stored about a contact")
    erase.add_argument("phone", help="phone number (+55 11 …, digits) or JID")
    erase.add_argument("--yes", action="store_true", help="confirm: erasing cannot be undone")
    erase.set_defaults(func=contact_erase)
    notes = contact.add_parser("notes", help="show or replace a contact's notes on an instance")
    notes.add_argument("phone", help="phone number (+55 11 …, digits) or JID")
    notes.add_argument("--instance", required=True, help="the WuzAPI instance")
    change = notes.add_mutually_exclusive_group()
    change.add_argument("--set", metavar="TEXT", help="the new notes, one fact a line")
    change.add_argument("--clear", action="store_true", help="delete the notes")
    notes.set_defaults(func=contact_notes)

    contacts_parser = commands.add_parser(
        "contacts", help="all contacts: merge conversations a LID and a number left apart"
    ).add_subparsers(dest="contacts_command", required=True)
    merge = contacts_parser.add_parser(
        "merge-split", help="merge each person's LID and phone conversations into one "
        "(safe to run again, and while workers run)")
    merge.add_argument("--instance", help="only this WuzAPI instance")
    merge.set_defaults(func=contacts_merge_split)

    operator = commands.add_parser(
        "operator", help="console operators: add, list, disable, enable, reset a password"
    ).add_subparsers(dest="operator_command", required=True)
    add = operator.add_parser("add", help="create an operator (the password is read from stdin)")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=["admin", "agent"])
    add.add_argument("--password-stdin", action="store_true", required=True,
                     help="read the password from the first line of stdin")
    add.set_defaults(func=operator_add)
    operator.add_parser("list", help="list operators").set_defaults(func=operator_list)
    for name, active in (("disable", False), ("enable", True)):
        switch = operator.add_parser(name, help=f"{name} an operator's sign-in")
        switch.add_argument("name")
        switch.set_defaults(func=_refusals(functools.partial(operator_set_active, active=active)))
    reset = operator.add_parser("reset-password",
                                help="set a new password (read from stdin); signs them out")
    reset.add_argument("name")
    reset.add_argument("--password-stdin", action="store_true", required=True)
    reset.set_defaults(func=operator_reset_password)
    _knowledge_parsers(commands)

    again = commands.add_parser("replay", help="re-run a failed reply run")
    again.add_argument("run_id", type=int)
    again.set_defaults(func=replay)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
