"""Installed model cards, their test metrics, and the audit log."""

from bonecls.ui.widgets import models_page

models_page()
