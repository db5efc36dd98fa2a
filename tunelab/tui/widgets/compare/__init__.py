"""Widgets of the compare screen and the report viewer."""
