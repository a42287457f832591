"""Home: upload many radiographs (or try an example)."""

from bonecls.ui.pages.home import home_page

home_page()
