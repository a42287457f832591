"""Batch worklist: many images ranked by suspicion, exports."""

from bonecls.ui.views import worklist_page

worklist_page()
