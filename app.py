"""bonecls Streamlit app: `streamlit run app.py`. Thin: pages/*.py call bonecls.ui.pages."""

from __future__ import annotations

import streamlit as st

from bonecls.ui import error_policy, services

st.set_page_config(
    page_title="bonecls — X-ray reading aid",
    page_icon="🩻",  # an emoji: a material icon makes browsers fetch it from Google
    layout="wide",
    initial_sidebar_state="expanded",
)
error_policy.setup_logging()
services.warm_up()

pages = {
    "Read": [
        st.Page("pages/home.py", title="Home — upload", icon=":material/home:", default=True),
        st.Page("pages/fracture.py", title="Fracture", icon=":material/personal_injury:"),
        st.Page("pages/threeclass.py", title="Fracture severity", icon=":material/stacked_bar_chart:"),
        st.Page("pages/pneumonia.py", title="Pneumonia", icon=":material/pulmonology:"),
        st.Page("pages/worklist.py", title="Worklist", icon=":material/format_list_numbered:"),
        st.Page("pages/pacs.py", title="PACS", icon=":material/dns:"),
    ],
    "About": [st.Page("pages/models.py", title="Models & audit", icon=":material/inventory_2:")],
}
page = st.navigation(pages, position="sidebar", expanded=True)
# The disclaimer banner is drawn by every page itself (bonecls.ui.widgets.page_view), inside the page's
# run: AppTest 1.67 drops this entry script's own elements once a test has switched pages.
error_policy.run_page(page)
