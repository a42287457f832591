"""PACS: search a DICOMweb server, read a study, store the SR and SC back."""

from bonecls.ui.pages.pacs import pacs_page

pacs_page()
