"""The app's entry script, run by Streamlit on every rerun: it routes to the page asked for."""
from dissect_app.navigation import navigation

navigation().run()
