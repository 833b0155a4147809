"""Experiment configs: one file per paper-row family (big_vision style)."""
