"""Installed model cards, their test metrics, and the audit log."""

from bonecls.ui.views import models_page

models_page()
