"""How the console refuses: an action's typed error becomes a page with its message and the
status its kind says (Invalid 400, NotFound 404, Conflict 409); a database that cannot be
reached, 503. Never a 500 for anything a person sent."""

from __future__ import annotations

from flask import Flask, render_template
from sqlalchemy.exc import DataError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from werkzeug.exceptions import HTTPException

from zapreply.actions.errors import ActionError, Conflict, Invalid, NotFound

STATUS = {NotFound: 404, Conflict: 409, Invalid: 400}


def page(message: str, status: int) -> tuple[str, int]:
    return render_template("error.html", message=message, status=status), status


def init_app(app: Flask) -> None:
    @app.errorhandler(ActionError)
    def _action_error(error: ActionError) -> tuple[str, int]:
        status = next((code for kind, code in STATUS.items() if isinstance(error, kind)), 400)
        return page(error.message, status)

    @app.errorhandler(OperationalError)
    @app.errorhandler(InterfaceError)
    @app.errorhandler(PoolTimeoutError)
    def _database_unavailable(error: Exception) -> tuple[str, int]:
        app.logger.warning("console: database unavailable: %s", type(error).__name__)
        return page("The database cannot be reached right now; try again shortly.", 503)

    @app.errorhandler(DataError)
    def _data_error(error: DataError) -> tuple[str, int]:
        # Neither the database's message nor the parameters: they may hold a send token.
        app.logger.warning("console: value refused by the database: %s",
                           type(error.orig).__name__)
        return page("A value is not valid for the database (too long?).", 400)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> HTTPException | tuple[str, int]:
        if error.code is not None and error.code < 400:
            return error  # a redirect werkzeug's routing raised
        return page(error.description or error.name, error.code or 400)
