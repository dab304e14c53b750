"""core50_local dataset (CORe50 128x128 from the local archive, per-session splits)."""
