"""Streamlit app logic (pages in ``pages/`` are thin calls into :mod:`bonecls.ui.views`).

- :mod:`bonecls.ui.session`: uploads in memory keyed by sha256 (``ingest_uploads``)
- :mod:`bonecls.ui.services`: models loaded once per process, cached predictions and heat maps
- :mod:`bonecls.ui.figures`: plotly viewer, probabilities, calibration, confusion matrix, curves
- :mod:`bonecls.ui.components`: banner, status badges, error boxes
- :mod:`bonecls.ui.views`: the pages' bodies
"""
