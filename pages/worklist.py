"""Batch worklist: many images ranked by suspicion, exports."""

from bonecls.ui.pages.worklist import worklist_page

worklist_page()
