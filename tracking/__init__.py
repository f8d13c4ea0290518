"""latentscape's tracking layer: the run contract, MLflow adapters and the DuckDB catalog."""
