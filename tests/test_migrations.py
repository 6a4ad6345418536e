"""The migration runner: ordered, recorded, re-runnable, and strict about edited files."""

from __future__ import annotations

import re
import shutil

import pytest

from metrics_platform import migrations
from metrics_platform.paths import SQL_DIR


def test_split_statements_respects_quotes_and_comments():
    sql = """
    -- a comment; with a semicolon
    CREATE TABLE a (x String DEFAULT ';') ENGINE = Memory;
    SELECT 'it''s; fine', "q;uoted" -- trailing; comment
    ;
    -- only a comment;
    """
    statements = migrations.split_statements(sql)
    assert len(statements) == 2
    assert statements[0].endswith("ENGINE = Memory")
    assert "'it''s; fine'" in statements[1]


def test_unknown_placeholder_is_an_error(tmp_path, settings):
    (tmp_path / "0001_bad.sql").write_text("SELECT '{{no_such_value}}'")
    (migration,) = migrations.discover(tmp_path)
    with pytest.raises(migrations.MigrationError, match="no_such_value"):
        migrations.render(migration, migrations.template_values(settings))


def test_badly_named_or_duplicate_files_are_refused(tmp_path):
    (tmp_path / "1_short.sql").write_text("SELECT 1")
    with pytest.raises(migrations.MigrationError, match="NNNN_lower_snake"):
        migrations.discover(tmp_path)
    (tmp_path / "1_short.sql").unlink()
    (tmp_path / "0001_a.sql").write_text("SELECT 1")
    (tmp_path / "0001_b.sql").write_text("SELECT 2")
    with pytest.raises(migrations.MigrationError, match="already used"):
        migrations.discover(tmp_path)


def test_every_shipped_migration_renders(settings):
    values = migrations.template_values(settings)
    for migration in migrations.discover():
        assert "{{" not in migrations.render(migration, values)


_VIEW_RE = re.compile(r"CREATE MATERIALIZED VIEW (?:IF NOT EXISTS )?(\w+) TO (\w+) AS(.*)", re.DOTALL)
_READS_RE = re.compile(r"\b(?:FROM|JOIN)\s+(\w+)")


def test_views_reading_kafka_are_created_after_their_downstream():
    """ClickHouse starts streaming from a Kafka table when a view first reads it, with the chain as
    it is then: a view reading Kafka created before the views below it drops the first messages
    (seen on a fresh stack). 0003 and 0004 predate the rule; 0010 replaces their chains."""
    kafka_tables = {
        name
        for migration in migrations.discover()
        for name in re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)[^;]*?ENGINE = Kafka", migration.template, re.DOTALL)
    }
    assert kafka_tables == {"kafka_otel_spans", "kafka_agent_events"}
    checked = 0
    for migration in migrations.discover():
        if migration.version in (3, 4):
            continue
        statements = migrations.split_statements(migration.template)
        views = [(m[1], m[2], set(_READS_RE.findall(m[3]))) for m in map(_VIEW_RE.search, statements) if m]
        for position, (name, target, reads) in enumerate(views):
            if not kafka_tables & reads:
                continue
            checked += 1
            fed, grew = {target}, True
            while grew:  # every table this view's rows flow into, through the file's views
                grew = False
                for _, view_target, view_reads in views:
                    if fed & view_reads and view_target not in fed:
                        fed.add(view_target)
                        grew = True
            for later_name, _, later_reads in views[position + 1 :]:
                assert not fed & later_reads, (
                    f"{migration.path.name}: {later_name} is created after {name}, which streams from Kafka into it"
                )
    assert checked >= 2


def test_migrations_rerun_cleanly_and_an_edited_one_is_refused(stack, ch, tmp_path):
    # The stack applied everything at start; a second run applies nothing and changes nothing.
    before = ch.query("SELECT count() FROM schema_migrations").result_rows[0][0]
    assert migrations.migrate(ch, stack) == []
    assert ch.query("SELECT count() FROM schema_migrations").result_rows[0][0] == before
    assert all(s.applied for s in migrations.status(ch))

    edited_dir = tmp_path / "sql"
    shutil.copytree(SQL_DIR, edited_dir)
    first = sorted(edited_dir.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- an innocent-looking edit\n")
    with pytest.raises(migrations.MigrationError, match="edited after it was applied"):
        migrations.migrate(ch, stack, migrations.discover(edited_dir))
