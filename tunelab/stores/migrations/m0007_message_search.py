"""Full-text search over chat messages: an FTS5 index of `messages.content`, kept in sync by triggers.

An external-content table (`content='messages'`) stores only the index, not a second copy of
every message. The triggers follow SQLite's documented recipe for external content (a delete is
an insert of the special 'delete' command with the old text), and they also fire for the rows
removed by `ON DELETE CASCADE` when a conversation is deleted. Existing messages are indexed once
by 'rebuild'.
"""

import sqlite3

STATEMENTS = (
    "CREATE VIRTUAL TABLE messages_fts USING fts5(content, content='messages', content_rowid='id',"
    " tokenize='unicode61 remove_diacritics 2')",
    "CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN"
    " INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content); END",
    "CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN"
    " INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.id, old.content); END",
    "CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages BEGIN"
    " INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.id, old.content);"
    " INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content); END",
    "INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')",
)


def migrate(conn: sqlite3.Connection) -> None:
    # Not `run_script`: it splits on ';', and a trigger body holds several statements.
    for statement in STATEMENTS:
        conn.execute(statement)
