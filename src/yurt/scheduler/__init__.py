"""Scheduling: the pure scaling policy and the reconcile loop that acts on it."""
