"""The one state store: a single SQLite file (WAL) under the appliance data dir."""
