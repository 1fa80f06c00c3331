"""risk: scores readings against threshold rules and keeps the per-station and per-region picture."""
