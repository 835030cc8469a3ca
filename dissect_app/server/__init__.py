"""What a Streamlit server runs: ``streamlit_app.py`` (the server, ``dissect app`` runs it),
``entry.py`` (the script run on every rerun) and ``.streamlit/config.toml`` (the app's
settings, read by Streamlit from beside the script it serves). Scripts, not modules:
nothing imports them."""
