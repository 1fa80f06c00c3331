"""risk: scores readings against threshold rules; keeps the per-station and per-region picture."""
