"""Fracture (binary): probabilities, status, heat map beside the radiograph."""

from bonecls.ui.pages.classifier import classifier_page

classifier_page("fracture")
