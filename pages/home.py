"""Home: upload many radiographs (or try an example)."""

from bonecls.ui.widgets import home_page

home_page()
