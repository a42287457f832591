"""Fracture severity: healthy / fractured / beyond repair, with heat maps."""

from bonecls.ui.pages.classifier import classifier_page

classifier_page("threeclass")
