"""Streamlit app logic (the scripts in ``pages/`` are thin calls into :mod:`bonecls.ui.pages`).

- :mod:`bonecls.ui.pages`: the pages' bodies, one module per page
- :mod:`bonecls.ui.widgets`: what several pages draw alike (banner, pickers, viewer, result panel, audit)
- :mod:`bonecls.ui.session`: uploads in memory keyed by sha256 (``ingest_uploads``)
- :mod:`bonecls.ui.services`: models loaded once per process, cached predictions and heat maps
- :mod:`bonecls.ui.figures`: plotly viewer, probabilities, calibration, confusion matrix, curves
- :mod:`bonecls.ui.error_policy`: what an error shows on a page, and the server log it goes to
"""
