"""Installed model cards, their test metrics, and the audit log."""

from bonecls.ui.pages.model_cards import models_page

models_page()
