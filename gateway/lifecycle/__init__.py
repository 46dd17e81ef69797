"""Model lifecycle: the version history (loads, weight changes, promotions, rollbacks)."""
