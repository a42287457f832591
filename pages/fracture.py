"""Fracture (binary): probabilities, status, heat map beside the radiograph."""

from bonecls.ui.views import classifier_page

classifier_page("fracture")
