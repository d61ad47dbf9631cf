"""Screening: many relaxations as walkers of one `Potential` (the on-the-fly learner too)."""
