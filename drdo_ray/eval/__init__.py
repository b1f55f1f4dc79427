"""Evaluation: sampling at temperatures, Oracle and judge win rates, KL, OOD bins, reports."""
