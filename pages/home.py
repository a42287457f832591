"""Home: upload many radiographs (or try an example)."""

from bonecls.ui.views import home_page

home_page()
