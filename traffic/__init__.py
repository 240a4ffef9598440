"""Served traffic: its records and spans, written and read, and the sink that records KServe's inference logger."""
