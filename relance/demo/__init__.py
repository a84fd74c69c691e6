"""Sample data for `relance demo`: `leads.csv` (made once by `generate_leads.py`, then committed)."""
