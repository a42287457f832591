"""Pneumonia: detector boxes with a confidence slider, classifier probability, EigenCAM."""

from bonecls.ui.views import pneumonia_page

pneumonia_page()
