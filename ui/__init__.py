"""latentscape's Streamlit app. Reads only through latentscape.tracking.catalog."""
