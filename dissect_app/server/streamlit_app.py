"""Serve the app: ``dissect app [--results DIR] [--hosted]`` runs this file, and so does
``streamlit run streamlit_app.py [-- --results DIR] [-- --hosted]`` in a checkout (the
top-level file links here) or in a folder written by ``dissect host`` (a copy).

This file only makes the server: an ``st.App`` around the entry script (``entry.py``:
``st.navigation`` over ``dissect_app/views``) that starts warming the app in the
background as the server starts (``dissect_app.warm_up``), so the first visitor does
not wait for imports.
"""
import importlib.util
import threading
from contextlib import asynccontextmanager
from pathlib import Path

import streamlit as st

# Found without importing dissect_app (importing it is part of the warm-up's work), and
# wherever this file sits: in the package, linked from a checkout's top level or copied.
ENTRY = Path(importlib.util.find_spec("dissect_app").origin).parent / "server" / "entry.py"


def _warm_up() -> None:
    from dissect_app.warm_up import warm_up

    warm_up()


@asynccontextmanager
async def _warm_at_start(_app: st.App):
    threading.Thread(target=_warm_up, name="dissect-warm-up", daemon=True).start()
    yield


app = st.App(ENTRY, lifespan=_warm_at_start)
