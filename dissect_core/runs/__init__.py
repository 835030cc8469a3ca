"""Finished runs, torch-free: the ``Run`` model, run folders and their side tables, the
manifest, other tools' formats, results bundles (format and import), the built-in demo's
runs, and the summaries and comparisons the app draws. Browsing needs only this layer."""
