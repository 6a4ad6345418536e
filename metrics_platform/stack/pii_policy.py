"""The Collector's PII policy: ``deploy/otelcol/pii-policy.toml`` turned into processor config.

The operator edits one TOML file; at every start the launcher renders it into the processor that
``deploy/otelcol/config.yaml`` puts in the traces pipeline, ``spanredaction/pii`` (ours,
deploy/otelcol/spanredactionprocessor). On resource, scope, span and span-event attributes it hashes
the first identity key present into the target key with the secret salt and replaces URL query
strings and fragments; it removes raw identity, drop and (by default) content keys from those
attributes and from span links (which no contrib component reaches; there at any depth); and it
masks every value pattern in every attribute value, span name, status message and event name (a
query string in a span name too). It runs after the span-name fill, so a name built from attributes
is redacted too.

The rendered file holds no secret: the processor reads the salt from the environment variable it
names (METRICS_PLATFORM_PII_SALT). Standard library only: the Collector image renders the policy with
this one file (deploy/otelcol/Dockerfile).
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

SALT_ENV = "METRICS_PLATFORM_PII_SALT"


class PiiPolicyError(ValueError):
    """The policy file is missing a section or holds an invalid value; the message says where."""


@dataclass(frozen=True)
class PiiPolicy:
    """What the policy file says, validated."""

    hash_target: str
    hash_keys: tuple[str, ...]
    drop_keys: tuple[str, ...]
    drop_key_patterns: tuple[str, ...]
    content_keys: tuple[str, ...]
    content_key_patterns: tuple[str, ...]
    url_keys: tuple[str, ...]
    url_part_keys: tuple[str, ...]
    replacement: str
    patterns: dict[str, str]

    def removed_keys(self, keep_content: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Exact keys and key patterns removed everywhere (content keys unless kept)."""
        keys = self.hash_keys + self.drop_keys + (() if keep_content else self.content_keys)
        patterns = self.drop_key_patterns + (() if keep_content else self.content_key_patterns)
        return keys, patterns


def load(path: Path) -> PiiPolicy:
    """Read and check a policy file (TOML)."""
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise PiiPolicyError(f"cannot read the PII policy {path}: {exc}") from exc

    def strings(section: str, key: str, required: bool = True) -> tuple[str, ...]:
        value = raw.get(section, {}).get(key, None if required else [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise PiiPolicyError(f"{path}: [{section}] {key} must be a list of non-empty strings")
        return tuple(value)

    target = raw.get("hash", {}).get("target")
    replacement = raw.get("redact", {}).get("replacement")
    patterns = raw.get("redact", {}).get("patterns")
    if not isinstance(target, str) or not target:
        raise PiiPolicyError(f"{path}: [hash] target must be a non-empty string")
    if not isinstance(replacement, str) or re.search(r"[\w$\\]", replacement):
        # A replacement with letters or digits could itself match a pattern; `$` and `\` would be
        # read as group references by the regex engines.
        raise PiiPolicyError(f"{path}: [redact] replacement must be punctuation only, such as '****'")
    if not isinstance(patterns, dict) or not patterns or not all(isinstance(v, str) for v in patterns.values()):
        raise PiiPolicyError(f"{path}: [redact.patterns] must map names to regular expressions")
    policy = PiiPolicy(
        hash_target=target,
        hash_keys=strings("hash", "keys"),
        drop_keys=strings("drop", "keys"),
        drop_key_patterns=strings("drop", "key_patterns", required=False),
        content_keys=strings("content", "keys"),
        content_key_patterns=strings("content", "key_patterns", required=False),
        url_keys=strings("url", "url_keys"),
        url_part_keys=strings("url", "part_keys", required=False),
        replacement=replacement,
        patterns=dict(patterns),
    )
    # Python's re is close enough to Go's RE2 to catch typos before the Collector refuses to start.
    key_patterns = policy.drop_key_patterns + policy.content_key_patterns
    for name, pattern in [*policy.patterns.items(), *((p, p) for p in key_patterns)]:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise PiiPolicyError(f"{path}: pattern {name!r} is not a valid regular expression: {exc}") from exc
    return policy


def _config_string(text: str) -> str:
    """A config string: only `$` needs escaping, for the config loader."""
    return text.replace("$", "$$")


def render(policy: PiiPolicy, keep_content: bool) -> dict:
    """The ``processors`` section for the PII processor named in config.yaml."""
    keys, key_patterns = policy.removed_keys(keep_content)
    return {
        "processors": {
            "spanredaction/pii": {
                # A value is matched in its string form (a card number sent as an int, an e-mail in
                # a list of messages); only a value that changes becomes a (masked) string.
                "ignored_keys": [_config_string(policy.hash_target)],
                "drop_keys": [_config_string(k) for k in keys],
                "drop_key_patterns": [_config_string(p) for p in key_patterns],
                "blocked_values": [_config_string(p) for p in policy.patterns.values()],
                "replacement": _config_string(policy.replacement),
                # A span name should hold no query string (OpenTelemetry naming rules).
                "name_query_replacement": _config_string("?" + policy.replacement),
                "hash_target": _config_string(policy.hash_target),
                "hash_keys": [_config_string(k) for k in policy.hash_keys],
                "hash_salt_env": SALT_ENV,
                "url_keys": [_config_string(k) for k in policy.url_keys],
                "url_part_keys": [_config_string(k) for k in policy.url_part_keys],
            },
        }
    }


def write(policy_path: Path, keep_content: bool, out: Path) -> Path:
    """Render the policy to ``out`` (JSON, which the Collector reads as YAML); returns ``out``."""
    rendered = render(load(policy_path), keep_content)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial")
    partial.write_text(json.dumps(rendered, indent=2) + "\n")
    partial.replace(out)
    return out
