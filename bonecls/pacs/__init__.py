"""PACS integration: DICOMweb search/retrieve/store, DICOM SR and Secondary Capture results, a C-STORE node
and archive sweeps.

Results written into a PACS look official, while these models are research models. So every object this
package writes says "RESEARCH USE ONLY — NOT FOR DIAGNOSTIC USE", carries the model card's training-data
sentence, and a model trained on synthetic data sends only to loopback destinations unless the operator
passes an explicit research flag (:mod:`bonecls.pacs.safety`). Patient identifiers travel back to the PACS
inside the DICOM objects (DICOM requires them) and nowhere else: not in logs, the audit log, or result
tables.

Modules: ``orthanc_server`` (a loopback Orthanc for development, tests and the demo), ``models`` (the one
place that loads classifiers and detectors and reads their scope verdict), ``results`` (what a reading is),
``reader`` (read a study), ``dicomweb`` (QIDO/WADO/STOW), ``sr`` and ``sc`` (DICOM out), ``send``
(STOW-RS or C-STORE, with the safety check), ``queue`` and ``node`` (``bonecls listen``), ``sweep``
(``bonecls sweep`` on Dask) and ``cli``.
"""

from __future__ import annotations

RESEARCH_NOTICE = "RESEARCH USE ONLY — NOT FOR DIAGNOSTIC USE"
#: ASCII form for places whose character repertoire is the default one (burned-in text, CS/LO values).
RESEARCH_NOTICE_ASCII = "RESEARCH USE ONLY - NOT FOR DIAGNOSTIC USE"
BURNED_IN_NOTICE = "NOT FOR DIAGNOSTIC USE"
