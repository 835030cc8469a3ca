"""dissect_core: find out which concept each unit of a vision network has learned.

An implementation of CLIP-Dissect (Oikarinen & Weng, ICLR 2023) with a cache for
every stage. The pipeline lives in ``dissect_core.engine.pipeline`` (``describe``);
runs are read with ``dissect_core.runs.run_folders``; comparisons are computed in
``dissect_core.runs.analysis``. Importing the package itself is cheap: torch is only
imported by the modules that need it.
"""

__version__ = "0.1.0"
