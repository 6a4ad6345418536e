"""The Collector's PII policy end to end: a corpus with identities in every place a span can hold
them goes through the real Collector; no raw value reaches Kafka, the Collector's on-disk queue or
any ClickHouse table, and identity keys become the keyed hash."""

from __future__ import annotations

import hashlib
import json
import random
import secrets
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import orjson
import pytest

from metrics_platform.stack import collector, kafka_broker, pii_policy
from tests import otlp_json
from tests.collector_helpers import clickhouse_find, kafka_traces, post_otlp, read_topic
from tests.helpers import flat_event, produce, span_id, trace_id, wait_for

SALT = "test-salt-not-secret"  # tests/conftest.py
HASH_KEYS = ("user_id", "enduser.id", "user.id", "gen_ai.request.user", "gen_ai.user")
CONTENT_KEYS = (
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.prompt",
    "gen_ai.completion",
    "gen_ai.system_instructions",
    "gen_ai.prompt.0.content",
    "gen_ai.completion.0.content",
)


def _sha(raw: str) -> str:
    return hashlib.sha256((SALT + raw).encode()).hexdigest()


def _value(v: object) -> dict:
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, list):
        return {"arrayValue": {"values": [_value(x) for x in v]}}
    return {"stringValue": str(v)}


def _attrs(items: dict) -> list[dict]:
    return [{"key": k, "value": _value(v)} for k, v in items.items()]


def _card(rng: random.Random) -> str:
    """A Luhn-valid 16-digit Visa-style number, different on every run."""
    digits = [4] + [rng.randrange(10) for _ in range(14)]
    total = 0
    for i, d in enumerate(reversed(digits)):
        d = d * 2 if i % 2 == 0 else d
        total += d - 9 if d > 9 else d
    return "".join(map(str, digits + [(10 - total % 10) % 10]))


@dataclass
class Corpus:
    """An OTLP/JSON request full of identities, what must never be stored, and the expected hashes."""

    token: str
    rng: random.Random
    needles: dict[str, str] = field(default_factory=dict)  # raw value -> where it was put
    hashes: dict[str, str] = field(default_factory=dict)  # "span <id>" / "resource <n>" / "event <id>" -> hash
    trace_ids: set[str] = field(default_factory=set)
    resource_spans: list[dict] = field(default_factory=list)

    def secret(self, where: str, raw: str) -> str:
        self.needles[raw] = where
        return raw

    def sentence(self, where: str) -> str:
        """Free text with an e-mail, two phones, a card, a bearer token and four kinds of API key."""
        n = len(self.needles)
        email = self.secret(where, f"pii.{self.token}.{n}@example.com")
        phone = self.secret(where, f"+1 415-555-{self.rng.randrange(10000):04d}")
        local = self.secret(where, f"(212) 555-{self.rng.randrange(10000):04d}")
        card = self.secret(where, _card(self.rng))
        grouped = self.secret(where, " ".join(card[i : i + 4] for i in range(0, 16, 4)))
        bearer = self.secret(where, f"tkn{self.token}{n}AbCdEfGh")
        sk = self.secret(where, f"sk-proj-{self.token}{n}AbCdEfGhIjKlMn")
        akia = self.secret(where, "AKIA" + "".join(self.rng.choices("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", k=16)))
        api_key = self.secret(where, f"ak{self.token}{n}zz")
        self.secret(where, card)  # the digits alone, whatever separators surround them
        return (
            f"user {email} called {phone} and {local}, paid with {grouped} ({card}); "
            f"Authorization: Bearer {bearer} key {sk} aws {akia} api_key={api_key}"
        )

    def span(self, trace_id: str, name: str, attributes: dict, **extra: object) -> dict:
        now = time.time_ns()
        span_id = secrets.token_hex(8)
        self.trace_ids.add(trace_id)
        return {
            "traceId": trace_id,
            "spanId": span_id,
            "name": name,
            "kind": 1,
            "startTimeUnixNano": str(now - 50_000_000),
            "endTimeUnixNano": str(now),
            "attributes": _attrs(attributes),
            **extra,
        }

    def request(self) -> dict:
        return {"resourceSpans": self.resource_spans}


def build_corpus(service: str) -> Corpus:
    """Identities in every place: resource, scope, span, event and link attributes under every key
    name the policy knows, URL query strings, prompts, span names, status and exception messages."""
    c = Corpus(token=secrets.token_hex(4), rng=random.Random(secrets.randbits(32)))
    t = c.token
    trace = secrets.token_hex(16)
    spans: list[dict] = []

    # Free text in every string-bearing place of one span.
    event_name = c.sentence("event name")
    spans.append(
        c.span(
            trace,
            "lookup " + c.sentence("span name"),
            {
                "note": c.sentence("span attribute"),
                "labels": ["ok", c.sentence("span array attribute")],
                "payment.card": int(c.secret("span int attribute", _card(c.rng))),
                # Opaque query values that no value pattern matches: only the URL rule removes them.
                "url.full": f"https://shop.example.com/v1/orders?session={c.secret('url.full', f'sess{t}q1')}"
                f"&email={c.secret('url.full', f'mail{t}q1')}%40example.com#{c.secret('url.full', f'frag{t}')}",
                "http.url": f"http://api.example.com/search?q={c.secret('http.url', f'query{t}q2')}",
                "url.query": f"id={c.secret('url.query', f'id{t}q3')}",
            },
            status={"code": 2, "message": "upstream refused: " + c.sentence("status message")},
            events=[
                {
                    "timeUnixNano": str(time.time_ns()),
                    "name": "exception",
                    "attributes": _attrs(
                        {
                            "exception.type": "ValueError",
                            "exception.message": "bad input from " + c.sentence("exception.message"),
                            "exception.stacktrace": "Traceback: " + c.sentence("exception.stacktrace"),
                        }
                    ),
                },
                {"timeUnixNano": str(time.time_ns()), "name": event_name, "attributes": []},
            ],
            links=[
                {
                    "traceId": secrets.token_hex(16),
                    "spanId": secrets.token_hex(8),
                    "attributes": _attrs(
                        {
                            "note": c.sentence("link attribute"),
                            "user_id": c.secret("link user_id", f"uid-link-{t}"),
                            "user.email": c.secret("link user.email", f"linkmail-{t}"),
                        }
                    ),
                }
            ],
        )
    )
    # Prompts and completions (dropped by default), in current and older conventions.
    spans.append(
        c.span(
            trace,
            "chat gpt-4.1",
            {
                "gen_ai.operation.name": "chat",
                **{key: c.secret(key, f"content-{t}-{i} my name is Jane") for i, key in enumerate(CONTENT_KEYS)},
            },
            events=[
                {
                    "timeUnixNano": str(time.time_ns()),
                    "name": "gen_ai.content.prompt",
                    "attributes": _attrs({"gen_ai.prompt": c.secret("event gen_ai.prompt", f"evprompt-{t}")}),
                }
            ],
        )
    )
    # Each identity key alone on a span: hashed into user_id_hash, raw key removed.
    for key in HASH_KEYS:
        raw = c.secret(f"span {key}", f"uid-{key}-{t}")
        span = c.span(trace, f"hash {key}", {key: raw})
        c.hashes[f"span {span['spanId']}"] = _sha(raw)
        spans.append(span)
    # An integer id hashes like its decimal string.
    number = c.rng.randrange(10**9, 10**10)
    span = c.span(trace, "hash int", {"user.id": int(c.secret("span int user.id", str(number)))})
    c.hashes[f"span {span['spanId']}"] = _sha(str(number))
    spans.append(span)
    # Precedence: the first key of the list wins; the other raw value is removed as well.
    first, second = c.secret("span user_id (first)", f"uid-first-{t}"), c.secret("span gen_ai.user", f"uid-2nd-{t}")
    span = c.span(trace, "hash precedence", {"gen_ai.user": second, "user_id": first})
    c.hashes[f"span {span['spanId']}"] = _sha(first)
    spans.append(span)
    # A raw value passed off as the hash is hashed too; an event-level id; keys that are dropped.
    disguised = c.secret("span user_id_hash (raw)", f"disguised-{t}")
    span = c.span(trace, "hash disguised", {"user_id_hash": disguised})
    c.hashes[f"span {span['spanId']}"] = _sha(disguised)
    spans.append(span)
    event_id = c.secret("event user.id", f"uid-event-{t}")
    span = c.span(
        trace,
        "event identity",
        {key: c.secret(f"span {key}", f"drop-{key}-{t}") for key in ("user_email", "user.email", "enduser.email")},
        events=[{"timeUnixNano": str(time.time_ns()), "name": "login", "attributes": _attrs({"user.id": event_id})}],
    )
    c.hashes[f"event {span['spanId']}"] = _sha(event_id)
    spans.append(span)

    resource_id = c.secret("resource enduser.id", f"uid-resource-{t}")
    c.hashes["resource 0"] = _sha(resource_id)
    c.resource_spans.append(
        {
            "resource": {
                "attributes": _attrs(
                    {
                        "service.name": service,
                        "deployment.environment": "test",
                        "enduser.id": resource_id,
                        "user.email": c.secret("resource user.email", f"resmail-{t}"),
                        "host.note": c.sentence("resource attribute"),
                    }
                )
            },
            "scopeSpans": [
                {
                    "scope": {"name": "pii-test", "attributes": _attrs({"owner": c.sentence("scope attribute")})},
                    "spans": spans,
                }
            ],
        }
    )
    return c


def _leaks(haystacks: dict[str, bytes], corpus: Corpus) -> list[str]:
    return sorted(
        f"{where}: {corpus.needles[raw]!r} value {raw!r}"
        for where, data in haystacks.items()
        for raw in corpus.needles
        if raw.encode() in data
    )


def _check_hashes(records: list[dict], corpus: Corpus) -> None:
    def attr(attributes: list[dict], key: str) -> str | None:
        return next((a["value"].get("stringValue") for a in attributes if a["key"] == key), None)

    got: dict[str, str | None] = {}
    for record in records:
        for rs in record["resourceSpans"]:
            if any(s["traceId"] in corpus.trace_ids for ss in rs["scopeSpans"] for s in ss["spans"]):
                got["resource 0"] = attr(rs["resource"].get("attributes", []), "user_id_hash")
            for ss in rs["scopeSpans"]:
                for s in ss["spans"]:
                    got[f"span {s['spanId']}"] = attr(s.get("attributes", []), "user_id_hash")
                    for e in s.get("events", []):
                        if attr(e.get("attributes", []), "user_id_hash"):
                            got[f"event {s['spanId']}"] = attr(e["attributes"], "user_id_hash")
    assert {k: got.get(k) for k in corpus.hashes} == corpus.hashes


def test_no_raw_identity_reaches_kafka_the_queue_or_clickhouse(stack, ch):
    # 1. Kafka up: the corpus goes straight through to Kafka and ClickHouse.
    first = build_corpus("pii-direct")
    status, body = post_otlp(stack, first.request())
    assert status == 200, body

    # 2. Kafka down: a second corpus is acknowledged into the Collector's persistent queue.
    second = build_corpus("pii-queued")
    queue = collector.queue_dir(stack)
    assert kafka_broker.stop(stack), "Kafka was not running"
    try:
        status, body = post_otlp(stack, second.request())
        assert status == 200, body
        on_disk = {str(p.relative_to(queue)): p.read_bytes() for p in sorted(queue.rglob("*")) if p.is_file()}
        some_id = bytes.fromhex(next(iter(second.trace_ids)))
        assert any(some_id in data for data in on_disk.values()), f"the queued spans are not in {queue}"
        assert _leaks({f"queue file {n}": d for n, d in on_disk.items()}, second) == []
    finally:
        kafka_broker.start(stack)

    # 3. Every message of the spans topic, raw.
    both = Corpus(token="", rng=random.Random(0), needles=first.needles | second.needles)
    records = kafka_traces(stack, first.trace_ids | second.trace_ids, timeout_s=120)
    messages = read_topic(stack, stack.kafka.spans_topic)
    assert _leaks({"kafka": b"\n".join(messages)}, both) == []
    _check_hashes(records, first)
    _check_hashes(records, second)

    # 4. Every string column of every ClickHouse table, once both corpora have landed.
    trace_ids = sorted(first.trace_ids | second.trace_ids)

    def landed():
        found = set().union(*clickhouse_find(ch, trace_ids).values())
        return found == set(trace_ids)

    wait_for(landed, 120, "both corpora in ClickHouse")
    leaks = clickhouse_find(ch, list(both.needles))
    assert leaks == {}, {table: sorted(f"{both.needles[r]}: {r}" for r in raws) for table, raws in leaks.items()}
    # Span and resource hashes are columns of the stored spans (event attributes may not be stored).
    hashes = {h for c in (first, second) for where, h in c.hashes.items() if not where.startswith("event")}
    stored = set().union(*clickhouse_find(ch, sorted(hashes)).values())
    assert stored == hashes, f"hashes not stored: {sorted(hashes - stored)}"

    # The salt itself never shows up in the Collector's log.
    assert SALT not in collector.daemon(stack).log_file.read_text(errors="replace")


def test_prompt_content_can_be_kept_redacted(stack):
    kept = replace(stack, collector=replace(stack.collector, pii_keep_content=True))
    corpus = Corpus(token=secrets.token_hex(4), rng=random.Random(secrets.randbits(32)))
    trace = secrets.token_hex(16)
    content = f"content-{corpus.token} please help"
    email = corpus.secret("prompt e-mail", f"kept.{corpus.token}@example.com")
    messages = json.dumps([{"role": "user", "parts": [{"type": "text", "content": f"{content}, I am {email}"}]}])
    span = corpus.span(trace, "chat", {"gen_ai.input.messages": messages, "gen_ai.prompt.0.content": content})
    corpus.resource_spans.append(
        {"resource": {"attributes": _attrs({"service.name": "pii-kept"})}, "scopeSpans": [{"spans": [span]}]}
    )
    collector.stop(stack)
    try:
        collector.start(kept)
        status, body = post_otlp(kept, corpus.request())
        assert status == 200, body
        (record,) = kafka_traces(kept, {trace})
    finally:
        collector.stop(kept)
        collector.start(stack)
    text = json.dumps(record)
    assert content in text, "kept content was dropped"
    assert email not in text and "****" in text, "a pattern inside kept content was not redacted"


def test_rendered_policy_escapes_regexes_and_keeps_the_salt_out(tmp_path: Path):
    policy = tmp_path / "policy.toml"
    source = Path(collector.SOURCE_DIR / "pii-policy.toml").read_text()
    # A pattern holding `"`, a backslash and `$` must reach the Collector unchanged: `$` doubled for
    # the config loader everywhere.
    source = source.replace("[redact.patterns]", "[redact.patterns]\nodd = '\"x\\d+$'", 1)
    policy.write_text(source.replace("key_patterns = []", "key_patterns = ['^\"k\\d+$']", 1))
    processors = pii_policy.render(pii_policy.load(policy), keep_content=False)["processors"]
    assert '"x\\d+$$' in processors["spanredaction/pii"]["blocked_values"]
    removal = processors["spanredaction/pii"]
    assert '^"k\\d+$$' in removal["drop_key_patterns"] and "gen_ai.input.messages" in removal["drop_keys"]
    # Hashing and the URL rules are the same processor's; it reads the salt from the environment
    # variable it names, so the rendered config holds no salt.
    assert removal["hash_target"] == "user_id_hash" and removal["hash_keys"][0] == "user_id"
    assert "http.url" in removal["url_keys"] and "url.query" in removal["url_part_keys"]
    assert removal["hash_salt_env"] == "METRICS_PLATFORM_PII_SALT" and SALT not in json.dumps(processors)
    # Kept content is not deleted (the value patterns still apply to it).
    kept = pii_policy.render(pii_policy.load(policy), keep_content=True)["processors"]
    assert "gen_ai.input.messages" not in kept["spanredaction/pii"]["drop_keys"]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.replace('target = "user_id_hash"', "target = 3"), "target"),
        (lambda s: s.replace('replacement = "****"', 'replacement = "x"'), "punctuation"),
        (lambda s: s.replace("card = '", "card = '(", 1), "card"),
    ],
)
def test_a_bad_policy_is_refused_with_its_location(tmp_path: Path, edit, message: str):
    policy = tmp_path / "policy.toml"
    policy.write_text(edit(Path(collector.SOURCE_DIR / "pii-policy.toml").read_text()))
    with pytest.raises(pii_policy.PiiPolicyError, match=message):
        pii_policy.load(policy)


def test_identities_nested_in_attrs_straight_to_kafka_leave_no_raw_value_in_clickhouse(stack, ch):
    """Producers that bypass the Collector: identities nested under attrs (flat path) and in kvlist
    attributes (OTLP path), in messages stored or rejected, reach no ClickHouse table raw (dead_letters
    included)."""
    token = secrets.token_hex(4)
    raw = {
        "flat-user-id": f"nested-id-{token}",
        "flat-enduser-id": f"nested-enduser-{token}",
        "flat-user-name": f"nested-name-{token}",
        "otlp-user-id": f"kvlist-id-{token}",
        "otlp-enduser-id": f"kvlist-enduser-{token}",
    }
    service = f"pii-nested-{token}"
    events = [
        flat_event(service, attrs={"request": {"user": {"id": raw["flat-user-id"]}}}),
        flat_event(service, attrs={"enduser": {"id": raw["flat-enduser-id"], "role": "admin"}}),
        flat_event(service, attrs={"user": {"tier": "gold", "name": raw["flat-user-name"]}}),
    ]

    def kvlist(key: str, inner: dict[str, str]) -> dict:
        return {"key": key, "value": {"kvlistValue": {"values": [otlp_json.attribute(k, v) for k, v in inner.items()]}}}

    spans = []
    for good in (True, False):  # one stored (if the mapping accepts it), one rejected for its token count
        attrs = [kvlist("user", {"id": raw["otlp-user-id"]}), kvlist("enduser", {"id": raw["otlp-enduser-id"]})]
        if not good:
            attrs.append(otlp_json.attribute("gen_ai.usage.input_tokens", -1))
        body = otlp_json.span(trace_id(), "chat", {}, span_id=span_id())
        body["attributes"] = attrs
        spans.append(otlp_json.request({"service.name": service}, [body]))
    produce(stack.kafka, stack.kafka.events_topic, [orjson.dumps(e) for e in events])
    produce(stack.kafka, stack.kafka.spans_topic, spans)

    def settled() -> bool:
        stored = int(
            ch.command("SELECT count() FROM agent_events WHERE service = {s:String}", parameters={"s": service})
        )
        letters = int(ch.command("SELECT count() FROM dead_letters WHERE position(payload, {s:String}) > 0",
                                 parameters={"s": service}))  # fmt: skip
        return stored + letters >= len(events) + len(spans)

    wait_for(settled, 60, "every nested-identity message stored or rejected")
    leaks = clickhouse_find(ch, list(raw.values()))
    assert leaks == {}, {table: sorted(values) for table, values in leaks.items()}
