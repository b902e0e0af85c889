"""Pure helpers behind app_streamlit.py (no Streamlit imports): thumbnails, filters, uploads, history, index info."""
