"""Push this deployment's metrics to a Prometheus Pushgateway.

For short-lived batch runs that Prometheus cannot scrape: the command pushes the
registry a scrape would serve (``exposition.build_registry()``: the merged
multiprocess folder when ``PROMETHEUS_MULTIPROC_DIR`` is set, else this process's
own metrics, plus the database gauges and build info). Run it at the end of the job,
with the job's ``PROMETHEUS_MULTIPROC_DIR``, or call it in-process with
``call_command("push_metrics", gateway=..., job=...)``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.core.management.base import BaseCommand, CommandError, CommandParser
from prometheus_client import push_to_gateway, pushadd_to_gateway
from prometheus_client.registry import Collector

from ... import catalogue, selfmetrics
from ...conf import app_settings
from ...scrape import exposition

BACKEND = "pushgateway"


def _grouping(pairs: list[str]) -> dict[str, str]:
    grouping: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not catalogue.LABEL_NAME.match(key) or key.startswith("__"):
            raise CommandError(f"--grouping wants key=value with a label name as key, got {pair!r}")
        if key == "job":
            raise CommandError("--grouping cannot set job: use --job")
        if not value:
            raise CommandError(f"--grouping {key}= needs a value (the Pushgateway refuses empty)")
        grouping[key] = value
    return grouping


class Command(BaseCommand):
    help = "Push the metrics a scrape would serve to a Prometheus Pushgateway (batch jobs)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--gateway", required=True, help="Pushgateway URL, e.g. http://127.0.0.1:9091"
        )
        parser.add_argument("--job", required=True, help="the job label of the pushed group")
        parser.add_argument(
            "--grouping",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="more grouping labels (repeatable), e.g. --grouping instance=runner-3",
        )
        parser.add_argument(
            "--replace",
            action="store_true",
            help="replace every metric of the group (PUT); default replaces only the "
            "families pushed (POST)",
        )
        parser.add_argument(
            "--name",
            action="append",
            default=[],
            help="push only these sample names (repeatable; like /metrics?name[]=)",
        )
        parser.add_argument(
            "--timeout", type=float, default=10.0, help="seconds to wait for the gateway"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not app_settings.ENABLED:
            raise CommandError("metrics are disabled (TAMMA_METRICS ENABLED is false)")
        gateway: str = options["gateway"]
        if urlsplit(gateway).scheme not in ("http", "https"):
            raise CommandError(f"--gateway must be an http(s) URL, got {gateway!r}")
        if options["timeout"] <= 0:
            raise CommandError("--timeout must be positive")
        job: str = options["job"]
        if not job:
            raise CommandError("--job must not be empty")
        grouping = _grouping(options["grouping"])
        selfmetrics.start_backend_errors(BACKEND)
        full = exposition.build_registry()
        registry: Collector = full.restricted_registry(options["name"]) if options["name"] else full
        push = push_to_gateway if options["replace"] else pushadd_to_gateway
        try:
            push(
                gateway,
                job=job,
                registry=registry,
                grouping_key=grouping,
                timeout=options["timeout"],
            )
        except Exception as error:  # URLError, HTTPError (4xx/5xx), timeouts, refusals
            selfmetrics.count_backend_error(BACKEND)
            raise CommandError(f"could not push to the Pushgateway at {gateway}: {error}") from None
        group = "".join(f" {k}={v}" for k, v in grouping.items())
        method = "replaced" if options["replace"] else "pushed"
        self.stdout.write(f"Metrics {method} to {gateway} (job={job}{group}).")
