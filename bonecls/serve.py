"""Start the app with its models loading from the server's first second.

    python -m bonecls.serve [any `streamlit run` option, e.g. --server.port 8501]

``streamlit run app.py`` executes ``app.py`` (and so starts the model warm-up) only when the first
browser session connects: the first reader then waits for torch's import and every model's load,
about 9 s on a 2-core machine (BENCHMARKS.md, the app). This launcher starts the same warm-up thread
(:func:`bonecls.ui.services.warm_up`, ``BONECLS_WARMUP=0`` turns it off) in the server's own process,
then hands over to Streamlit's own command line with the options unchanged, so the models load while
the server starts and the browser loads the page. The models it loads are the ones the pages use:
``app.py`` finds the warm-up started and does not start a second.

Streamlit Community Cloud always runs ``streamlit run app.py``; there the warm-up starts with the
first session, as before, and a bookmarked page (``/fracture``) opened as the very first request after
a start runs in Streamlit's old ``pages/`` folder mode (file names in the sidebar) until the home page
has been opened once. This launcher switches that mode off before the server starts.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bonecls.errors import BoneclsError


def app_path() -> Path:
    """``app.py`` in the working folder (a deployment's checkout), else the one beside this package."""
    for candidate in (Path.cwd() / "app.py", Path(__file__).resolve().parents[1] / "app.py"):
        if candidate.is_file():
            return candidate
    raise BoneclsError(
        "app.py was not found in the current folder or beside the bonecls package; run this from the "
        "bonecls checkout."
    )


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        app = app_path()
    except BoneclsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from bonecls.ui import error_policy, services

    error_policy.setup_logging()
    services.warm_up()
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.web import cli

    # Streamlit starts in its old pages/ folder mode (multipage apps v1) and leaves it only once app.py's
    # st.navigation has run: a bookmarked page (/fracture) as the server's first request would run alone,
    # with the file names as its sidebar. app.py declares every page, so the old mode is off from the start.
    PagesManager.uses_pages_directory = False

    sys.argv = ["streamlit", "run", str(app), *args]
    return cli.main()


if __name__ == "__main__":
    sys.exit(main())
