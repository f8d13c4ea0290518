"""latentscape's Streamlit app. Reads only through tracking.catalog."""
