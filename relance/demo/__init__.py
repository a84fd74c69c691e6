"""Sample data for `relance demo`: `leads.csv` (made once by `scripts/generate_leads.py`, then committed)."""
