"""The dashboard: per hour over the last 24 hours or per day over the last 30, for every config
or one, as charts drawn on the server (console_app.charts) with a table beside each.

Agents and admins see traffic, handoffs, failures and reply times: they tell an attendant how
busy the day is and whether the bot keeps up. Tokens, LLM cost and the daily budget are for
admins only, like the configs that set the budget: spending is the business's, not a figure
an attendant acts on."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Blueprint, render_template, request
from markupsafe import Markup

from console_app import charts, forms
from console_app.auth import is_admin
from zapreply.actions import configs as config_actions
from zapreply.actions import dashboard as figures
from zapreply.actions.dashboard import Dashboard
from zapreply.storage.db import session_scope

bp = Blueprint("dashboard", __name__)

BLUE, GREEN, VIOLET, RED, AMBER, SKY = (
    "#2463c9", "#0f8a5f", "#6941c6", "#b42318", "#a15c00", "#7fb4ff")


@dataclass(frozen=True)
class Chart:
    id: str
    title: str
    svg: Markup
    # The text alternative: column names, then one row per bucket.
    columns: list[str]
    rows: list[list[str]]


@bp.get("/dashboard")
def index() -> str:
    unit = request.args.get("unit", "hour")
    config_id = forms.optional_id("config")
    with session_scope() as session:
        found = figures.dashboard(session, unit=unit, config_id=config_id)
        configs = [(c.id, c.name, c.instance) for c in config_actions.list_configs(session)]
        config_name = found.config.name if found.config else None
    return render_template("dashboard.html", dash=found, configs=configs, unit=unit,
                           config_id=config_id, config_name=config_name,
                           charts=_charts(found, with_costs=is_admin()), seconds=_seconds)


def _label(dash: Dashboard, index: int) -> str:
    at = dash.buckets[index].start
    return at.strftime("%H:00") if dash.unit == "hour" else at.strftime("%d %b")


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} s" if value < 10 else f"{value:.0f} s"


def _charts(dash: Dashboard, *, with_costs: bool) -> list[Chart]:
    labels = [_label(dash, i) for i in range(len(dash.buckets))]
    per = "hour" if dash.unit == "hour" else "day"
    scope = f"per {per}, UTC, " + ("last 24 hours" if per == "hour" else "last 30 days")
    b = dash.buckets
    made = []

    def add(chart_id: str, title: str, svg: Markup, columns: list[str],
            values: list[list[str]]) -> None:
        rows = [[label, *row] for label, row in zip(labels, values, strict=True)]
        made.append(Chart(chart_id, title, svg, [per.capitalize(), *columns], rows))

    received = [x.messages_in for x in b]
    replies = [x.replies for x in b]
    add("traffic", "Messages in and replies",
        charts.bar_chart("traffic", "Messages in and replies",
                         f"Customer messages received and replies sent, {scope}.", labels,
                         [charts.Series("Messages in", received, BLUE),
                          charts.Series("Replies", replies, GREEN)], "messages",
                         whole=True),
        ["Messages in", "Replies"], [[str(m), str(r)] for m, r in zip(received, replies,
                                                                      strict=True)])
    handoffs = [x.handoffs for x in b]
    failures = [x.failures for x in b]
    add("trouble", "Handoffs and failed runs",
        charts.bar_chart("trouble", "Handoffs and failed runs",
                         f"Conversations handed to a person and reply runs that failed, {scope}.",
                         labels, [charts.Series("Handoffs", handoffs, VIOLET),
                                  charts.Series("Failed runs", failures, RED)], "count",
                         whole=True),
        ["Handoffs", "Failed runs"], [[str(h), str(f)] for h, f in zip(handoffs, failures,
                                                                       strict=True)])
    p50 = [x.p50_seconds for x in b]
    p95 = [x.p95_seconds for x in b]
    add("latency", "Time to reply",
        charts.line_chart("latency", "Time to reply",
                          "Median (p50) and 95th percentile (p95) seconds from a customer's "
                          f"message to the first message of its reply being sent, {scope}.",
                          labels, [charts.Series("p50", p50, BLUE),
                                   charts.Series("p95", p95, AMBER)], "seconds"),
        ["p50", "p95"], [[_seconds(m), _seconds(n)] for m, n in zip(p50, p95, strict=True)])
    if not with_costs:
        return made
    budget = dash.budget if dash.unit == "day" else None
    tokens_in = [x.input_tokens for x in b]
    tokens_out = [x.output_tokens for x in b]
    token_limit = charts.Limit("daily budget", budget.tokens) \
        if budget is not None and budget.tokens else None
    add("tokens", "LLM tokens",
        charts.bar_chart("tokens", "LLM tokens",
                         f"Input (prompt) and output (completion) tokens, {scope}."
                         + (" The dashed line is the config's daily token budget."
                            if token_limit else ""),
                         labels, [charts.Series("Input", tokens_in, BLUE),
                                  charts.Series("Output", tokens_out, SKY)], "tokens",
                         stacked=True, limit=token_limit),
        ["Input tokens", "Output tokens"],
        [[str(i), str(o)] for i, o in zip(tokens_in, tokens_out, strict=True)])
    cost = [x.cost for x in b]
    cost_limit = charts.Limit("daily budget", budget.cost) \
        if budget is not None and budget.cost else None
    add("cost", "LLM cost",
        charts.bar_chart("cost", "LLM cost",
                         f"US dollars spent on the model and on transcriptions, {scope}."
                         + (" The dashed line is the config's daily cost budget."
                            if cost_limit else ""),
                         labels, [charts.Series("Cost", cost, GREEN)], "USD",
                         limit=cost_limit, tick=_dollars),
        ["Cost (USD)"], [[f"{c:.4f}"] for c in cost])
    return made


def _dollars(value: float) -> str:
    if value == 0:
        return "$0"
    return f"${value:.2f}" if value >= 0.1 else f"${value:.3g}"
