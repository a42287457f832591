"""Every case of the bad-input corpus gives exactly its expected outcome through load_radiograph."""

from __future__ import annotations

import pytest
from bad_inputs import CASES, BadInput, data

from bonecls.errors import ImageError
from bonecls.imaging import load_radiograph

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about the damaged files


def test_corpus_is_large_and_covers_both_outcomes() -> None:
    assert len(CASES) >= 30
    kinds = {case.outcome[0] for case in CASES}
    assert kinds == {"ok", "error"}


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_outcome(case: BadInput) -> None:
    kind, expected = case.outcome
    payload = data(case.name)
    if kind == "error":
        assert expected, "error cases must name the message they expect"
        with pytest.raises(ImageError) as info:  # any other exception type fails the test
            load_radiograph(payload)
        message = str(info.value)
        assert expected in message, message
        assert message.endswith("."), "messages are full sentences"
        return
    rg = load_radiograph(payload)
    if expected is None:
        assert rg.warnings == (), rg.warnings
    else:
        assert any(expected in warning for warning in rg.warnings), rg.warnings
    assert rg.pixels.dtype.name == "float32" and rg.pixels.ndim == 2
    assert float(rg.pixels.min()) >= 0.0 and float(rg.pixels.max()) <= 1.0
    if case.check is not None:
        case.check(rg)


def test_whole_corpus_through_the_app_upload_handler() -> None:
    """The app's uploader path gives every case its outcome in place, all in one batch, none lost."""
    from bonecls.ui.session import ingest_uploads

    files = [(f"upload-{i}", data(case.name)) for i, case in enumerate(CASES)]
    results = ingest_uploads(files)
    assert [r.name for r in results] == [name for name, _ in files]
    for case, result in zip(CASES, results, strict=True):
        kind, expected = case.outcome
        if kind == "error":
            assert result.radiograph is None and expected in (result.error or ""), (case.name, result.error)
        else:
            assert result.ok, (case.name, result.error)
            if expected is not None:
                assert any(expected in w for w in result.radiograph.warnings), case.name
