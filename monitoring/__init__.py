"""Served traffic against the served model's own data: drift measured, its report, the labeling queue."""
