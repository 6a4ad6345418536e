"""Alert rules as code, evaluated by a sensor: burn rates, budgets, lag, dead letters, freshness, anomalies.

The rules file (METRICS_PLATFORM_ALERT_RULES, default deploy/alerts/rules.yaml) is read on every
tick; a bad file is reported (check ``rules_file_valid``) and the last good rules keep running.
Each rule has a check on the asset it watches, failing while the rule fires for any key, with the
value and threshold; the sensor reports those checks as they change, so nothing has to run.
"""

import json
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg

from metrics_platform.alerting import evaluate, gather, notify, state, store
from metrics_platform.alerting.rules import Loaded, Rule, load
from metrics_platform.defs.enrichment import COST
from metrics_platform.defs.health import STREAMS
from metrics_platform.defs.kafka import KAFKA_TOPICS
from metrics_platform.defs.resources import ClickHouseResource, PlatformSettings
from metrics_platform.settings import Settings

ALERT_RULES = dg.AssetSpec(
    key="alert_rules",
    group_name="alerts",
    description=(
        "The alert rules file (METRICS_PLATFORM_ALERT_RULES, default deploy/alerts/rules.yaml; format in "
        "deploy/alerts/README.md). Observed by alert_rules_sensor whenever it changes; the check "
        "rules_file_valid fails while the file has problems (the last good rules stay in force)."
    ),
    kinds={"yaml"},
)
RULES_VALID = dg.AssetCheckKey(ALERT_RULES.key, "rules_file_valid")
# The asset each type of rule watches: its check hangs there.
_WATCHED = {"consumer_lag": KAFKA_TOPICS, "cost_budget": COST, "dead_letters": STREAMS["dead_letters"].key}
MAX_KEYS_SHOWN = 20


def last_good_path(settings: Settings) -> Path:
    return settings.state_dir / "alerts" / "rules.last-good.yaml"


def load_rules(settings: Settings, keep: bool = True) -> Loaded:
    """The rules in force: the file if it is good, else the last good copy (with the file's problems)."""
    return load(settings.alerting.rules_path, last_good_path(settings), keep=keep)


def check_name(rule_name: str) -> str:
    return f"alert_{rule_name.replace('-', '_')}"


def check_key(rule: Rule) -> dg.AssetCheckKey:
    return dg.AssetCheckKey(_WATCHED.get(rule.type, STREAMS["agent_events"].key), check_name(rule.name))


def _rule_checks(rules: tuple[Rule, ...]) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(
            check_key(rule).name,
            asset=check_key(rule).asset_key,
            description=f"Fails while alert rule {rule.name!r} ({rule.type}) fires for any key. {rule.description}",
        )
        for rule in rules
    ]


# Checks exist for the rules in force when the code location loads (reload it after adding rules;
# until then the sensor still evaluates and notifies new rules, and says which have no check yet).
_AT_LOAD = load_rules(Settings.from_env(), keep=False).rules
RULE_CHECK_SPECS = [dg.AssetCheckSpec(RULES_VALID.name, asset=ALERT_RULES.key), *_rule_checks(_AT_LOAD.rules)]


@dg.multi_asset_check(specs=RULE_CHECK_SPECS, can_subset=True, name="alert_rule_checks")
def alert_rule_checks(
    context: dg.AssetCheckExecutionContext, platform: PlatformSettings, clickhouse: ClickHouseResource
) -> Iterator[dg.AssetCheckResult]:
    """On demand, the same verdicts the sensor reports: the rules file's validity, and for each rule
    whether it fires now (from the latest evaluations in ``alert_status``)."""
    settings = platform.get()
    loaded = load_rules(settings, keep=False)
    selected = context.selected_asset_check_keys
    if RULES_VALID in selected:
        yield _rules_valid(loaded)
    latest = _latest_status(clickhouse.get_client())
    for rule in loaded.rules.rules:
        key = check_key(rule)
        if key in selected:
            yield _as_result(rule, latest.get(rule.name, []))
    missing = {k for k in selected if k != RULES_VALID} - {check_key(r) for r in loaded.rules.rules}
    for key in sorted(missing, key=str):
        yield dg.AssetCheckResult(
            asset_key=key.asset_key, check_name=key.name, passed=True, description="the rule is no longer in the file"
        )


def _latest_status(ch) -> dict[str, list[tuple[str, str, float, float, str]]]:
    rows = ch.query(
        "SELECT rule, key, argMax(state, evaluated_at), argMax(value, evaluated_at), argMax(threshold, evaluated_at), "
        "argMax(detail, evaluated_at) FROM alert_status WHERE evaluated_at >= now64(3) - INTERVAL 15 MINUTE "
        "GROUP BY rule, key"
    ).result_rows
    latest: dict[str, list[tuple[str, str, float, float, str]]] = {}
    for rule, key, status, value, threshold, detail in rows:
        latest.setdefault(rule, []).append((key, status, value, threshold, detail))
    return latest


def _rules_valid(loaded: Loaded) -> dg.AssetCheckResult:
    rules = loaded.rules
    metadata: dict[str, object] = {
        "file": rules.source,
        "rules": len(rules.rules),
        "channels": sorted(rules.channels),
        "using_last_good_rules": loaded.from_last_good,
    }
    if loaded.error:
        metadata["problems"] = dg.MetadataValue.md("```\n" + loaded.error + "\n```")
    return dg.AssetCheckResult(
        asset_key=ALERT_RULES.key,
        check_name=RULES_VALID.name,
        passed=loaded.error is None,
        metadata=metadata,
        description=loaded.error.splitlines()[0] if loaded.error else f"{len(rules.rules)} rules in force",
    )


def _as_result(rule: Rule, keys: list[tuple[str, str, float, float, str]]) -> dg.AssetCheckResult:
    """Fails while any key fires: the worst key's value and threshold, and a table of the firing keys."""
    firing = sorted((k for k in keys if k[1] == "firing"), key=lambda k: -k[2])
    severity = dg.AssetCheckSeverity.ERROR if rule.severity == "critical" else dg.AssetCheckSeverity.WARN
    metadata: dict[str, object] = {"rule_type": rule.type, "keys_evaluated": len(keys), "firing_keys": len(firing)}
    if firing:
        key, _, value, threshold, detail = firing[0]
        metadata |= {"key": key, "value": float(value), "threshold": float(threshold), "detail": detail}
        table = "| key | value | threshold | detail |\n|---|---|---|---|\n" + "\n".join(
            f"| {k} | {v:,.4g} | {t:,.4g} | {d.replace('|', '/')} |" for k, _, v, t, d in firing[:MAX_KEYS_SHOWN]
        )
        metadata["firing"] = dg.MetadataValue.md(table)
        description = f"{key}: {detail}"
    else:
        description = f"not firing ({len(keys)} keys evaluated)"
    return dg.AssetCheckResult(
        asset_key=check_key(rule).asset_key,
        check_name=check_key(rule).name,
        passed=not firing,
        severity=severity,
        metadata=metadata,
        description=description[:1000],
    )


def _evaluate_all(
    rules: tuple[Rule, ...], settings: Settings, clickhouse: ClickHouseResource, log: dg.DagsterLogManager
) -> tuple[dict[str, list[evaluate.Evaluation] | None], list[str]]:
    ch = clickhouse.get_reader()
    results: dict[str, list[evaluate.Evaluation] | None] = {}
    problems = []
    for rule in rules:
        try:
            results[rule.name] = evaluate.evaluate(rule, gather.gather(rule, ch, settings))
        except Exception as exc:  # an unreachable source: the rule keeps its state until it can be read
            results[rule.name] = None
            problems.append(f"{rule.name} not evaluated: {str(exc)[:300]}")
            log.warning(f"alert rule {rule.name} not evaluated: {exc}")
    return results, problems


def build_alert_sensor(
    minimum_interval_seconds: int = 60, checked_rules: tuple[Rule, ...] | None = None
) -> dg.SensorDefinition:
    """The alert sensor; a factory so tests can build and call it directly. Every minute by default, like
    Prometheus's rule evaluation: the rules' windows and ``for_seconds`` are minutes long, and at idle the
    ticks are most of what Dagster does. ``checked_rules``: the rules that have a Dagster check (default:
    those of the file when the code location loaded)."""
    checked = _AT_LOAD.rules if checked_rules is None else checked_rules
    known_checks = {check_key(rule) for rule in checked} | {RULES_VALID}

    @dg.sensor(
        name="alert_rules_sensor",
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        asset_selection=[ALERT_RULES.key],
    )
    def alert_rules_sensor(
        context: dg.SensorEvaluationContext, platform: PlatformSettings, clickhouse: ClickHouseResource
    ) -> dg.SensorResult:
        """Evaluates every alert rule of the rules file (error-rate and latency burn rates per service,
        route, model or account; daily cost budgets per account; consumer lag; dead-letter rate;
        freshness; anomalies per model and provider).

        Each transition (a key starts firing, or resolves) is written to ``alert_events`` and sent
        once to the rule's channels (Slack-compatible or generic webhooks, e-mail) with a link to its
        dashboard; every verdict goes to ``alert_status``. Firing keys live in the cursor (rebuilt from
        ``alert_events`` if lost). The tick's text says what fired and resolved.
        """
        settings = platform.get()
        now = time.time()
        saved = json.loads(context.cursor) if context.cursor else None
        loaded = load_rules(settings)
        rules = loaded.rules.by_name()
        ch = clickhouse.get_client()
        active = state.decode(saved["active"]) if saved else store.firing_from_history(ch)
        results, problems = _evaluate_all(loaded.rules.rules, settings, clickhouse, context.log)
        following, transitions = state.step(active, results, rules, now)

        rows, sent = [], []
        smtp = notify.Smtp(
            host=settings.alerting.smtp_host,
            port=settings.alerting.smtp_port,
            sender=settings.alerting.smtp_sender,
            username=settings.alerting.smtp_user,
            password=settings.alerting.smtp_password,
            starttls=settings.alerting.smtp_starttls,
        )
        for t in transitions:
            rule = rules.get(t.rule)
            item = notify.notice(t, rule, settings.alerting.dashboard_url)
            channels = loaded.rules.channels_for(rule) if rule is not None else list(loaded.rules.channels.values())
            delivered, failed = notify.deliver(item, channels, smtp)
            problems += failed
            rows.append((t, item.dashboard_url, delivered))
            sent.append(f"{t.state.upper()} {t.rule} [{t.key}] {t.value:,.4g} (threshold {t.threshold:,.4g})")
            context.log.warning(f"{item.title}: {t.detail} -> {', '.join(delivered) or 'no channel'}")
        store.record_transitions(ch, rows)
        evaluations = [e for found in results.values() for e in found or []]
        store.record_status(ch, evaluations, following, now)

        # Check verdicts: on the first tick, and for rules whose set of firing keys changed.
        firing_now = {
            name: sorted(k for (r, k), a in following.items() if r == name and a.state == "firing") for name in rules
        }
        reported = (saved or {}).get("reported", {})
        events: list = []
        file_state = {"error": loaded.error, "rules": sorted(rules), "source": loaded.rules.source}
        if reported.get("__file__") != file_state:
            events.append(dg.AssetObservation(asset_key=ALERT_RULES.key, metadata=_rules_valid(loaded).metadata))
            valid = _rules_valid(loaded)
            events.append(
                dg.AssetCheckEvaluation(
                    asset_key=ALERT_RULES.key, check_name=RULES_VALID.name, passed=valid.passed,
                    metadata=valid.metadata, description=valid.description,
                )
            )  # fmt: skip
        by_rule: dict[str, list[tuple[str, str, float, float, str]]] = {}
        for e in evaluations:
            by_rule.setdefault(e.rule, []).append((e.key, state.status(e, following), e.value, e.threshold, e.detail))
        unchecked = []
        for name, rule in rules.items():
            if reported.get(name) == firing_now[name] or results.get(name) is None:
                continue
            if check_key(rule) not in known_checks:
                unchecked.append(name)
                continue
            r = _as_result(rule, by_rule.get(name, []))
            events.append(
                dg.AssetCheckEvaluation(
                    asset_key=r.asset_key, check_name=r.check_name or "", passed=r.passed, severity=r.severity,
                    metadata=r.metadata, description=r.description,
                )
            )  # fmt: skip
        cursor = {
            "active": state.encode(following),
            "reported": {**firing_now, "__file__": file_state},
        }
        firing_count = sum(1 for a in following.values() if a.state == "firing")
        summary = [
            *(sent or ["no alert fired or resolved"]),
            f"{len(rules)} rules, {len(evaluations)} keys evaluated, {firing_count} firing",
        ]
        if loaded.error:
            summary.append(f"rules file rejected, last good rules in force: {loaded.error.splitlines()[0]}")
        if unchecked:
            summary.append(f"no Dagster check yet for {', '.join(unchecked)} (reload the code location)")
        summary += problems
        return dg.SensorResult(skip_reason="; ".join(summary)[:4000], cursor=json.dumps(cursor), asset_events=events)

    return alert_rules_sensor


defs = dg.Definitions(assets=[ALERT_RULES], asset_checks=[alert_rule_checks], sensors=[build_alert_sensor()])
