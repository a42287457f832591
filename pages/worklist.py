"""Batch worklist: many images ranked by suspicion, exports."""

from bonecls.ui.widgets import worklist_page

worklist_page()
