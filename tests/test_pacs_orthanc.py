"""The development Orthanc (bonecls.pacs.orthanc_server): starts on loopback with DICOMweb, refuses
anonymous HTTP and unknown DICOM peers, and stops cleanly."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from bonecls.pacs.orthanc_server import OrthancServer, dicomweb_plugin, main, read_state


def test_configuration_is_loopback_only_with_dicomweb(orthanc: OrthancServer) -> None:
    config = json.loads((orthanc.folder / "orthanc.json").read_text())
    assert config["RemoteAccessAllowed"] is False
    assert config["AuthenticationEnabled"] is True
    assert config["DicomAlwaysAllowStore"] is False and config["DicomCheckModalityHost"] is True
    assert {peer[1] for peer in config["DicomModalities"].values()} == {"127.0.0.1"}
    assert config["Plugins"] == [str(dicomweb_plugin())]
    assert Path(config["StorageDirectory"]).is_relative_to(orthanc.folder)
    assert orthanc.healthy()
    assert "dicom-web" in orthanc.get_json("/plugins")


def test_http_needs_the_user(orthanc: OrthancServer) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{orthanc.url}/system", timeout=10)
    assert info.value.code == 401


def test_dicom_accepts_declared_peers_only(orthanc: OrthancServer) -> None:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    def echo(aet: str) -> bool:
        ae = AE(ae_title=aet)
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", orthanc.dicom_port, ae_title=orthanc.aet)
        if not assoc.is_established:
            return False
        status = assoc.send_c_echo()
        assoc.release()
        return bool(status) and status.Status == 0

    assert echo("BONECLS-TEST")
    assert not echo("STRANGER")


def test_start_status_stop_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "dev-orthanc"
    assert main(["start", "--dir", str(folder)]) == 0
    try:
        out = capsys.readouterr().out
        assert "BONECLS_DICOMWEB_URL=http://127.0.0.1:" in out
        assert main(["status", "--dir", str(folder)]) == 0
        state = read_state(folder)
        assert state is not None
    finally:
        assert main(["stop", "--dir", str(folder)]) == 0
    assert read_state(folder) is None
    assert main(["status", "--dir", str(folder)]) == 3
    assert "Orthanc has stopped" in (folder / "orthanc.log").read_text()


def test_missing_orthanc_is_a_sentence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bonecls.pacs.errors import OrthancNotAvailable

    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("shutil.which", lambda *a, **k: None)
    with pytest.raises(OrthancNotAvailable, match="apt-get install orthanc orthanc-dicomweb"):
        OrthancServer(tmp_path).start()
