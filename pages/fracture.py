"""Fracture (binary): probabilities, status, heat map beside the radiograph."""

from bonecls.ui.widgets import classifier_page

classifier_page("fracture")
