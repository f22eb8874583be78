"""Each service's NATS identity: what its user may publish and subscribe.

The rules are derived here from the topology (streams, consumers, buckets)
and rendered into ``deploy/nats.conf`` (``linkflow schemas`` writes it, a
test fails when it drifts) and into the embedded server's config under
``linkflow up``, so both run the same rules. Each user gets an inbox prefix
of its own (``_INBOX_<user>``): replies to one service (PubAcks, API
answers, KV watch deliveries) cannot be read by another.

JetStream ack subjects come in two formats: ``$JS.ACK.<stream>.<consumer>.…``
and, from servers that know their domain or account (nats-server 2.10
clusters with a domain, and every 2.12+ server asked for it),
``$JS.ACK.<domain>.<account hash>.<stream>.<consumer>.…``. Both are allowed.
"""

from __future__ import annotations

import json
from typing import Final

from shared import roster
from shared.contracts import LINK_REFRESH, LINK_REFRESHED, ORPHAN_VISITS, REDIRECTS_BUSY
from shared.jetstream import topology
from shared.jetstream.topology import Consumer

SERVICES: Final = tuple(s.name for s in roster.ALL)
ADMIN: Final = "admin"
USERS: Final = (*SERVICES, ADMIN)
API: Final = "$JS.API"


def inbox_prefix(user: str) -> str:
    return "_INBOX" if user == ADMIN else f"_INBOX_{user}"


def _consume(c: Consumer) -> list[str]:
    return [
        f"{API}.CONSUMER.MSG.NEXT.{c.stream}.{c.name}",
        f"{API}.CONSUMER.INFO.{c.stream}.{c.name}",
        f"$JS.ACK.{c.stream}.{c.name}.>",
        f"$JS.ACK.*.*.{c.stream}.{c.name}.>",
    ]


def _worker(c: Consumer) -> list[str]:
    """A durable worker: its consumer, its advisories' consumer, its DLQ
    subject, and reading a message by sequence (the rescue of a message
    whose deliveries ran out)."""
    rescuer = topology.rescuer(c)
    return [
        *_consume(c),
        *_consume(rescuer),
        f"dlq.{c.stream}.{c.name}",
        # An advisory the rescue cannot handle is dead-lettered too.
        f"dlq.{rescuer.stream}.{rescuer.name}",
        f"{API}.STREAM.MSG.GET.{c.stream}",
        f"{API}.STREAM.INFO.{c.stream}",
    ]


def _own_consumer(c: Consumer) -> list[str]:
    """A consumer its service creates and deletes itself (the webhooks
    service's), consumes, and dead-letters from."""
    named = f"{c.stream}.{c.name}"
    return [
        *_consume(c),
        # nats-server 2.10+'s create, with the filter as the last tokens.
        f"{API}.CONSUMER.CREATE.{named}.{c.filter_subject}",
        f"{API}.CONSUMER.DELETE.{named}",
        f"dlq.{named}",
    ]


def _kv_read(bucket: str) -> list[str]:
    stream = f"KV_{bucket}"
    return [
        f"{API}.STREAM.INFO.{stream}",
        f"{API}.STREAM.MSG.GET.{stream}",
        f"{API}.DIRECT.GET.{stream}.>",
        # A watch is an ordered push consumer, re-created after a gap.
        f"{API}.CONSUMER.CREATE.{stream}",
        f"{API}.CONSUMER.CREATE.{stream}.>",
        f"{API}.CONSUMER.DELETE.{stream}.>",
        f"{API}.CONSUMER.INFO.{stream}.>",
        f"$JS.FC.{stream}.>",
    ]


def _kv_write(bucket: str) -> list[str]:
    return [*_kv_read(bucket), f"$KV.{bucket}.>"]


def _api_keys() -> list[str]:
    """Every HTTP service reads the keys and notes their use, nothing more."""
    usage = f"KV_{topology.KV_USAGE}"
    return [*_kv_read(topology.KV_KEYS), f"$KV.{topology.KV_USAGE}.>", f"{API}.STREAM.INFO.{usage}"]


def permissions() -> dict[str, dict[str, list[str]]]:
    """user -> {"publish": [...], "subscribe": [...]} (and "deny": [...],
    publish subjects refused although an allow matches)."""
    c = topology
    rules: dict[str, dict[str, list[str]]] = {
        "link": {
            "publish": [
                "links.created",
                "links.updated",
                "links.deleted",
                "clicks.>",
                *_kv_write(c.KV_LINKS),
                *_kv_write(c.KV_SALTS),
                *_kv_write(c.KV_DOMAINS),
                *_kv_read(c.KV_VISITS),
                *_api_keys(),
                f"{API}.STREAM.INFO.{c.CLICKS}",  # its replicas decide click grouping
                REDIRECTS_BUSY,
                ORPHAN_VISITS,
            ],
            "subscribe": [],
        },
        # Its API (the raw clicks' export) reads the keys like every HTTP service's.
        "click_recorder": {
            "publish": [*_worker(c.CLICK_RECORDER), *_api_keys()],
            "subscribe": [REDIRECTS_BUSY],
        },
        "cache_refresher": {
            # It answers refresh requests (a links.* dead letter's replay) on
            # reply subjects under LINK_REFRESHED, not in analytics' inbox.
            "publish": [
                *_worker(c.CACHE_REFRESHER),
                *_kv_write(c.KV_LINKS),
                f"{LINK_REFRESHED}.>",
            ],
            "subscribe": [LINK_REFRESH],
        },
        "analytics": {
            "publish": [
                *_worker(c.ANALYTICS_CLICKS),
                *_api_keys(),
                # Visit limits: which links have one, and their counts.
                *_kv_read(c.KV_LINKS),
                *_kv_write(c.KV_VISITS),
                # The pipeline view reads every consumer and the DLQ.
                *(f"{API}.CONSUMER.INFO.{x.stream}.{x.name}" for x in c.CONSUMERS),
                *(f"{API}.STREAM.MSG.GET.{x.stream}" for x in c.CONSUMERS),
                # Backfills read CLICKS on the worker loop through consumers
                # of their own. A consumer name is one token, so this cannot
                # be narrowed to backfill-* names; the recorder's consumer is
                # denied by name below.
                f"{API}.CONSUMER.CREATE.{c.CLICKS}.>",
                f"{API}.CONSUMER.DELETE.{c.CLICKS}.>",
                f"{API}.CONSUMER.MSG.NEXT.{c.CLICKS}.>",
                f"{API}.CONSUMER.INFO.{c.CLICKS}.>",
                f"$JS.ACK.{c.CLICKS}.>",
                f"$JS.ACK.*.*.{c.CLICKS}.>",
                # Its own letters, and DLQ operations: list, discard, put a
                # letter back when its replay failed (the recorder's too).
                f"dlq.{c.CLICKS}.*",
                f"{API}.STREAM.INFO.{c.DLQ}",
                f"{API}.STREAM.MSG.GET.{c.DLQ}",
                f"{API}.STREAM.MSG.DELETE.{c.DLQ}",
                # Replaying a click letter republishes it: both click
                # consumers filter clicks.>, so no narrower subject reaches
                # one of them. A links.* letter is the cache-refresher's to
                # replay (LINK_REFRESH): analytics publishes no links.*.
                "clicks.>",
                LINK_REFRESH,
            ],
            # links.created feeds links-created-per-day; clicks.> the live
            # stream; redirects.busy holds the consumer off during a spike;
            # LINK_REFRESHED.> answers its refresh requests; ORPHAN_VISITS
            # feeds the orphan visit counts.
            "subscribe": [
                "links.created",
                "clicks.>",
                REDIRECTS_BUSY,
                f"{LINK_REFRESHED}.>",
                ORPHAN_VISITS,
            ],
        },
        # The TypeScript service: exactly what it was seen to need (its
        # suite runs it as this user and fails on any violation).
        "webhooks": {
            "publish": [
                *_own_consumer(c.WEBHOOKS_LINKS),
                *_own_consumer(c.WEBHOOKS_CLICKS),
                *_api_keys(),
            ],
            # redirects.busy holds its intake and deliveries off during a spike.
            "subscribe": [REDIRECTS_BUSY],
        },
        ADMIN: {"publish": [">"], "subscribe": [">"]},
    }
    # Deny wins over allow: analytics' backfill rights stop at the other
    # services' click consumers (it could otherwise delete one, or take and
    # ack its clicks).
    rules["analytics"]["deny"] = [
        rule
        for other in (c.CLICK_RECORDER, c.WEBHOOKS_CLICKS)
        for rule in [
            *(
                f"{API}.CONSUMER.{verb}.{other.stream}.{other.name}{tail}"
                for verb in ("CREATE", "DELETE", "MSG.NEXT")
                for tail in ("", ".>")
            ),
            f"$JS.ACK.{other.stream}.{other.name}.>",
            f"$JS.ACK.*.*.{other.stream}.{other.name}.>",
        ]
    ]
    for user, rule in rules.items():
        rule["publish"] = list(dict.fromkeys(rule["publish"]))
        rule["subscribe"] = [*rule["subscribe"], f"{inbox_prefix(user)}.>"]
        if user == ADMIN:
            rule["subscribe"] = [">"]
    return rules


# Cluster routes: one identity that every node presents and expects (its
# password, as a user's, in LINKFLOW_ROUTE_NATS_PASSWORD).
ROUTE_USER: Final = "route"


def password_variable(user: str) -> str:
    return f"LINKFLOW_{user.upper()}_NATS_PASSWORD"


def authorization(passwords: dict[str, str] | None = None) -> str:
    """The ``authorization`` block: literal passwords, or ``$VARIABLE``
    references that nats-server reads from its environment."""
    lines = ["authorization {", "  users = ["]
    for user, rule in permissions().items():
        secret = json.dumps(passwords[user]) if passwords else f"${password_variable(user)}"
        lines.append(f"    {{user: {user}, password: {secret}, permissions: {{")
        deny = f", deny: {json.dumps(rule['deny'])}" if rule.get("deny") else ""
        lines.append(f"      publish: {{allow: {json.dumps(rule['publish'])}{deny}}}")
        lines.append(f"      subscribe: {{allow: {json.dumps(rule['subscribe'])}}}")
        lines.append("    }}")
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


def deploy_conf() -> str:
    """``deploy/nats.conf``: one node of compose's JetStream cluster."""
    return (
        "# Generated by `linkflow schemas` from shared/cli/permissions.py: edit that, not this.\n"
        "# One user per service, allowed only its own subjects; passwords come from\n"
        "# the environment (LINKFLOW_<USER>_NATS_PASSWORD).\n"
        "port: 4222\n"
        "http_port: 8222\n"
        "server_name: linkflow\n"
        "jetstream {\n"
        "  store_dir: /data\n"
        "  max_file_store: 10G\n"
        "}\n" + cluster() + authorization()
    )


def cluster() -> str:
    """The ``cluster`` block of ``deploy/nats.conf``. A route is no user: no
    permission applies to what it carries, so a container on the network
    that could open one would undo every user above. Routes therefore
    authenticate; the route URLs (compose's ``--routes``) carry the same
    user and password, since nats-server sends none of its own to a route
    it was given explicitly. The listen address is here too: a ``--cluster``
    flag with no user in its URL would clear this authorization."""
    return (
        "# Routes authenticate (their URLs in compose.yaml carry the same password):\n"
        "# a route is no user, no permission below applies to it. Across hosts or an\n"
        "# untrusted network, also encrypt them: a tls block here with cert_file,\n"
        '# key_file, ca_file and verify: true, and tls:// route URLs (docs/security.md, "NATS\n'
        '# identities").\n'
        "cluster {\n"
        "  name: linkflow\n"
        "  listen: 0.0.0.0:6222\n"
        "  authorization {\n"
        f"    user: {ROUTE_USER}\n"
        f"    password: ${password_variable(ROUTE_USER)}\n"
        "    timeout: 2\n"
        "  }\n"
        "}\n"
    )
