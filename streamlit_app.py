"""Serve the app: ``streamlit run streamlit_app.py [-- --results DIR] [-- --hosted]``.

The pages are ``overview.py`` (the home page) and ``pages/``. This file only makes
the server: an ``st.App`` that starts warming the app in the background as it
starts (``dissect_app.warm_up``), so the first visitor does not wait for imports.
"""
import threading
from contextlib import asynccontextmanager

import streamlit as st


def _warm_up() -> None:
    from dissect_app.warm_up import warm_up  # imported here: importing dissect_app is part of the work

    warm_up()


@asynccontextmanager
async def _warm_at_start(_app: st.App):
    threading.Thread(target=_warm_up, name="dissect-warm-up", daemon=True).start()
    yield


app = st.App("overview.py", lifespan=_warm_at_start)
