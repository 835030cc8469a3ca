"""The app's pages, one script each (``dissect_app.navigation`` lists them). Streamlit runs
them; nothing imports them. They use the app through its facade (``import dissect_app``)."""
