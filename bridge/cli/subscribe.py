"""``bridge subscribe``: create, list and delete the bridge's Subscriptions on the EHR."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer
from rich.table import Table

from bridge.cli.common import ConfigOption, client_for, handles_errors, out_console, print_json, settings_from
from bridge.service.subscriptions import Outcome, Subscriber
from bridge.state import open_state

HELP = """Create the Subscriptions that let the EHR notify the bridge (classic rest-hook and R4 backport topics).

Every subscription gets its own channel under --endpoint (the URL where the EHR reaches the service's /notify)
and its own secret in channel.header, derived from webhook_secret. Classic criteria: admissions
(Encounter?class=IMP,ACUTE,NONAC), Conditions and Observations; topics: the admission topics the server lists
in its CapabilityStatement (or --topic). Running it again keeps what exists and re-requests subscriptions the EHR
set to error. The service must be running: topic subscriptions start with a handshake.

Examples:

\b
    bridge subscribe https://ehr.example/fhir --endpoint https://bridge.example/notify --config bridge.yaml
    bridge subscribe https://ehr.example/fhir --endpoint https://bridge.example/notify --list
    bridge subscribe https://ehr.example/fhir --endpoint https://bridge.example/notify --delete all

Exit codes: 0 ok, 5 configuration (no webhook_secret), 7 EHR error or a subscription in status error.
"""


class Mode(StrEnum):
    both = "both"
    classic = "classic"
    topic = "topic"


class Content(StrEnum):
    id_only = "id-only"
    full_resource = "full-resource"
    empty = "empty"


def _outcomes_table(outcomes: list[Outcome]) -> Table:
    table = Table(title="Subscriptions", title_justify="left")
    for col in ("Id", "Kind", "Criteria / topic", "Channel", "Action", "Status"):
        table.add_column(col)
    for o in outcomes:
        table.add_row(o.ehr_id, o.wanted.kind, o.wanted.criteria, o.wanted.channel, o.action, str(o.status))
    return table


def _list(subscriber: Subscriber, as_json: bool) -> None:
    rows = list(subscriber.listing())
    if as_json:
        print_json(rows)
        return
    table = Table(title="Subscriptions of this bridge on the EHR", title_justify="left")
    for col in ("Id", "Status", "Kind", "Criteria / topic", "Channel", "Heartbeat s"):
        table.add_column(col)
    for r in rows:
        table.add_row(str(r["id"]), str(r["status"]), str(r["kind"]), str(r["criteria"]), str(r["channel"]),
                      str(r["heartbeatSeconds"] or "-"))
    out_console.print(table)


def _delete(subscriber: Subscriber, ids: list[str], as_json: bool) -> None:
    gone = subscriber.delete(None if "all" in ids else ids)
    if as_json:
        print_json({"deleted": gone})
    else:
        out_console.print(f"deleted: {', '.join(gone) or '-'}", highlight=False)


@handles_errors
def command(
    base_url: Annotated[str, typer.Argument(help="FHIR base URL of the EHR")],
    endpoint: Annotated[str, typer.Option("--endpoint", help="URL where the EHR reaches the bridge's /notify")],
    config: ConfigOption = None,
    mode: Annotated[Mode, typer.Option("--mode", help="classic, topic or both (topics only where offered)")
                    ] = Mode.both,
    topic: Annotated[list[str] | None, typer.Option("--topic", help="a topic canonical to subscribe to as well")
                     ] = None,
    heartbeat: Annotated[int, typer.Option("--heartbeat", help="heartbeat period (s) asked of topic subscriptions"
                                           )] = 60,
    content: Annotated[Content, typer.Option("--content", help="topic payload content")] = Content.id_only,
    wait: Annotated[float, typer.Option("--wait", help="seconds to wait for each subscription to turn active")
                    ] = 10.0,
    list_them: Annotated[bool, typer.Option("--list", help="list this bridge's subscriptions and exit")] = False,
    delete: Annotated[list[str] | None, typer.Option("--delete", help="delete a subscription by id ('all': every "
                                                     "one of this bridge's)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    settings = settings_from(config)
    store = open_state(settings.state_location())
    try:
        with client_for(base_url, settings) as client:
            subscriber = Subscriber(client, store, settings.webhook_secret, endpoint)
            if list_them:
                _list(subscriber, as_json)
                return
            if delete:
                _delete(subscriber, delete, as_json)
                return
            outcomes = subscriber.ensure(mode.value, topic or [], heartbeat, content.value, wait)
    finally:
        store.close()
    if as_json:
        print_json([{"id": o.ehr_id, "kind": o.wanted.kind, "criteria": o.wanted.criteria, "channel": o.wanted.channel,
                     "action": o.action, "status": o.status} for o in outcomes])
    else:
        out_console.print(_outcomes_table(outcomes))
    if any(o.status == "error" for o in outcomes):
        raise typer.Exit(7)


__all__ = ["HELP", "command"]
