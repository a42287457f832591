"""`bonecls listen` (bonecls.pacs.node, queue): a real subprocess node receiving C-STORE from pynetdicom,
killed with SIGKILL mid-transfer and restarted: every received instance is queued, Orthanc ends with
exactly one SR per instance, and malformed DICOM gets an error status, never a crash."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from factories import make_dicom_dataset
from pynetdicom import AE
from pynetdicom.sop_class import DigitalXRayImageStorageForPresentation, Verification

from bonecls.pacs import dicomweb
from bonecls.pacs.orthanc_server import free_port
from bonecls.pacs.queue import DurableQueue
from bonecls.pacs.sr import result_uid
from bonecls.weights import load_card

ROOT = Path(__file__).resolve().parents[1]
N_INSTANCES = 100
KILL_AFTER = 35


def _instances(seed: int, n: int = N_INSTANCES) -> list:
    """``n`` small DX instances in 5 studies, each with its own UIDs."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        pixels = (np.tile(np.linspace(200, 3800, 128), (128, 1)) + rng.normal(0, 40, (128, 128))).astype(
            np.uint16
        )
        ds = make_dicom_dataset(pixels, bits_stored=12)
        study = i % 5
        ds.StudyInstanceUID = result_uid("test-study", str(seed), str(study))
        ds.SeriesInstanceUID = result_uid("test-series", str(seed), str(study))
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = result_uid(
            "test-sop", str(seed), str(i)
        )
        ds.InstanceNumber = i + 1
        ds.PatientName, ds.PatientID = "NODE^TEST", "NODE-0001"
        out.append(ds)
    return out


class NodeProcess:
    def __init__(self, queue: Path, port: int, card_dir: Path, destination: str, env: dict, log: Path):
        launcher = "import sys; from bonecls.cli import main; sys.exit(main())"
        self.args = [sys.executable, "-c", launcher, "listen", "--port", str(port), "--queue", str(queue)]
        self.args += ["--model", str(card_dir), "--send", destination, "--no-sc"]
        self.port, self.env, self.log = port, env, log
        self.process: subprocess.Popen | None = None

    def start(self) -> NodeProcess:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                self.args, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            if _echo(self.port):
                return self
            time.sleep(0.2)
        pytest.fail(f"the node did not start:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=60)


def _echo(port: int) -> bool:
    ae = AE(ae_title="BONECLS-TEST")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="BONECLS-NODE")
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return bool(status) and status.Status == 0


def _send(port: int, datasets: list, on_ack=None) -> list[str]:
    """C-STORE each dataset; the SOP UIDs acknowledged with success (stops at a broken association)."""
    ae = AE(ae_title="BONECLS-TEST")
    ae.add_requested_context(DigitalXRayImageStorageForPresentation)
    assoc = ae.associate("127.0.0.1", port, ae_title="BONECLS-NODE")
    acked: list[str] = []
    if not assoc.is_established:
        return acked
    try:
        for ds in datasets:
            if not assoc.is_established:
                break
            status = assoc.send_c_store(ds)
            if not status or status.Status != 0:
                break
            acked.append(str(ds.SOPInstanceUID))
            if on_ack is not None:
                on_ack(len(acked))
    finally:
        if assoc.is_established:
            assoc.release()
    return acked


@pytest.fixture
def node_env(orthanc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setenv("BONECLS_DICOMWEB_USER", orthanc.user)
    monkeypatch.setenv("BONECLS_DICOMWEB_PASSWORD", orthanc.password)
    env = dict(os.environ)
    env.update(
        BONECLS_DICOMWEB_USER=orthanc.user,
        BONECLS_DICOMWEB_PASSWORD=orthanc.password,
        BONECLS_AUDIT_DB=str(tmp_path / "audit.sqlite"),
        PYTHONPATH=str(ROOT),
        OMP_NUM_THREADS="1",
    )
    return env


def test_sigkill_mid_transfer_loses_nothing_and_sends_nothing_twice(
    orthanc, node_env: dict, tiny_card_dir: Path, tmp_path: Path
) -> None:
    queue_dir, port, log = tmp_path / "queue", free_port(), tmp_path / "node.log"
    node = NodeProcess(queue_dir, port, tiny_card_dir, orthanc.dicomweb_url, node_env, log).start()
    datasets = _instances(seed=41)
    try:
        acked = _send(port, datasets, on_ack=lambda n: node.kill() if n == KILL_AFTER else None)
        assert len(acked) == KILL_AFTER  # the association died with the node
        assert set(acked) <= {i.sop_instance_uid for i in DurableQueue(queue_dir).items(500)}
        node.start()
        rest = [ds for ds in datasets if str(ds.SOPInstanceUID) not in set(acked)]
        retried = [datasets[0], datasets[KILL_AFTER - 1]]  # a sender retrying what it may not have heard
        assert len(_send(port, rest + retried)) == len(rest) + 2
        queue = DurableQueue(queue_dir)
        last, stalled_since = queue.counts(), time.monotonic()
        while last["pending"] and time.monotonic() - stalled_since < 90:
            time.sleep(1.0)
            now = queue.counts()
            if now != last:
                last, stalled_since = now, time.monotonic()
        assert queue.counts() == {"pending": 0, "done": N_INSTANCES, "skipped": 0, "failed": 0}, (
            log.read_text()[-3000:]
        )
    finally:
        node.stop()
    card, _ = load_card(tiny_card_dir)
    expected = {
        result_uid("sr", str(ds.StudyInstanceUID), f"{ds.SOPInstanceUID}:{card.sha256}"): str(
            ds.SOPInstanceUID
        )
        for ds in datasets
    }
    client = dicomweb.connect(orthanc.dicomweb_url)
    found: list[str] = []
    for study in {str(ds.StudyInstanceUID) for ds in datasets}:
        found += [
            item["00080018"]["Value"][0]
            for item in client.search_for_instances(
                study, search_filters={"Modality": "SR"}, get_remaining=True
            )
        ]
    assert sorted(found) == sorted(expected)  # one SR per received instance, none twice, none missing
    assert "NODE^TEST" not in log.read_text() and "NODE-0001" not in log.read_text()


def test_malformed_dicom_gets_an_error_status_not_a_crash(
    orthanc, node_env: dict, tiny_card_dir: Path, tmp_path: Path
) -> None:
    port, log = free_port(), tmp_path / "node.log"
    node = NodeProcess(tmp_path / "queue", port, tiny_card_dir, orthanc.dicomweb_url, node_env, log).start()
    try:
        good = _instances(seed=42, n=1)[0]
        good.save_as(tmp_path / "good.dcm", enforce_file_format=True)
        data = (tmp_path / "good.dcm").read_bytes()
        # keep the SOP UIDs (the sender needs them), then an element whose length runs past the end: the
        # dataset is cut short and has no StudyInstanceUID
        cut = data.index(b"\x08\x00\x60\x00CS")  # Modality, after SOPInstanceUID
        (tmp_path / "bad.dcm").write_bytes(data[:cut] + b"\x08\x00\x60\x00CS\xff\x7fDX")
        ae = AE(ae_title="BONECLS-TEST")
        ae.add_requested_context(DigitalXRayImageStorageForPresentation)
        assoc = ae.associate("127.0.0.1", port, ae_title="BONECLS-NODE")
        assert assoc.is_established
        try:
            status = assoc.send_c_store(tmp_path / "bad.dcm")
        finally:
            assoc.release() if assoc.is_established else assoc.abort()
        assert status.Status == 0xC210
        assert _echo(port) and node.process.poll() is None
        assert _send(port, [good]) == [str(good.SOPInstanceUID)]
        time.sleep(0.5)
        assert "C-STORE refused: the dataset cannot be decoded" in log.read_text()
    finally:
        node.stop()
