"""Fracture severity: healthy / fractured / beyond repair, with heat maps."""

from bonecls.ui.widgets import classifier_page

classifier_page("threeclass")
