"""What a run produced, for people and scripts: summaries read from MLMD."""
