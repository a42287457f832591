"""Pneumonia: detector boxes with a confidence slider, classifier probability, EigenCAM."""

from bonecls.ui.widgets import pneumonia_page

pneumonia_page()
