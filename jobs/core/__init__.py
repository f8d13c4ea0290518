"""Pure computation on numpy arrays: no MLflow, DuckDB, Streamlit, torch, nor files."""
