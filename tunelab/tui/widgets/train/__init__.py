"""Widgets of the Train screen: the loss plot and the table of runs."""
