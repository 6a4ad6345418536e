"""Sample history files for trying replays: realistic flat-contract events, a few bad lines.

``metrics-platform sample-history`` writes ``YYYY-MM-DD.jsonl.gz`` files into the history
directory, drawing services, agents, models and prices from the demo's tables, so a replay
backfill from the Dagster UI has something real to chew on.
"""

from __future__ import annotations

import gzip
import random
import secrets
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import orjson

from metrics_platform.demo import DEPLOYMENTS, LIST_PRICES_PER_1M, LLM_ERRORS, MODELS
from metrics_platform.enrichment.billing import DEMO_USER_IDS, user_hash

# One in this many lines is deliberately broken, to show what the replay does with rejects.
BAD_LINE_EVERY = 500


def _event(rng: random.Random, ts: datetime, user_hashes: list[str]) -> dict:
    deployment = rng.choices(DEPLOYMENTS, weights=[d.weight for d in DEPLOYMENTS])[0]
    model = rng.choice(deployment.models)
    provider = MODELS[model].provider
    tokens_in, tokens_out = rng.randint(50, 4000), rng.randint(10, 800)
    price_in, price_out = LIST_PRICES_PER_1M[model]
    failed = rng.random() < 0.03
    return {
        "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "trace_id": secrets.token_hex(16),
        "span_id": secrets.token_hex(8),
        "name": f"chat {model}",
        "service": deployment.service,
        "env": deployment.env,
        "agent": deployment.agent,
        "operation": "chat",
        "model": model,
        "provider": provider,
        "route": rng.choice(deployment.routes),
        "user_id_hash": rng.choice(user_hashes),
        "status": "error" if failed else "ok",
        "error_type": rng.choice(LLM_ERRORS) if failed else "",
        "latency_ms": round(rng.lognormvariate(6.4, 0.7) * MODELS[model].speed, 1),
        "tokens_prompt": tokens_in,
        "tokens_completion": tokens_out,
        "cost_usd": round((tokens_in * price_in + tokens_out * price_out) / 1e6, 6),
        "attrs": {"source": "sample-history"},
    }


def write_day(directory: Path, day: date, events: int, salt: str, seed: int | None = None) -> Path:
    """Write ``events`` lines (about 1 in 500 broken) for ``day``; returns the file's path.

    Users are the demo's, hashed with ``salt`` as the Collector would, so history joins the same
    billing accounts as live traffic.
    """
    rng = random.Random(seed if seed is not None else day.toordinal())
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{day.isoformat()}.jsonl.gz"
    user_hashes = [user_hash(salt, user_id) for user_id in DEMO_USER_IDS]
    with gzip.open(path, "wb") as out:
        for i in range(events):
            if i % BAD_LINE_EVERY == BAD_LINE_EVERY - 1:
                out.write(b'{"ts": "not a time", "service": ""}\n')
                continue
            ts = start + timedelta(seconds=rng.uniform(0, 86_399.9))
            out.write(orjson.dumps(_event(rng, ts, user_hashes)) + b"\n")
    return path
