"""On-the-fly learning: reference calls (`reference`, `calls`), the crash-safe journal (`journal`)."""
