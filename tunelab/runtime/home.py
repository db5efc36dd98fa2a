"""Opening the data dir's database, as every command and the app do first."""

from __future__ import annotations

import sqlite3

from tunelab.config import Settings
from tunelab.stores.db import connect
from tunelab.stores.trash import sweep, sweep_temps


def open_database(settings: Settings) -> sqlite3.Connection:
    """The database, after finishing or undoing any deletion a killed process left half done and
    removing the temp files killed writers left."""
    conn = connect(settings.db_path)
    sweep(conn, settings.home)
    sweep_temps(settings.home)
    return conn
