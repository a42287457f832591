"""Pneumonia: detector boxes with a confidence slider, classifier probability, EigenCAM."""

from bonecls.ui.pages.pneumonia import pneumonia_page

pneumonia_page()
