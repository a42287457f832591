"""Know when not to answer: each model's learned scope gate (issue 21).

Model-agnostic: the gate sees pooled feature vectors and header facts, never a predictor.

* :mod:`bonecls.scope.features` - pooled features recorded by hooks during the model's forward pass;
* :mod:`bonecls.scope.stats` - class-conditional Mahalanobis statistics (pytorch-ood), safetensors
  beside the weights with their sha256 on the card, and the threshold choice;
* :mod:`bonecls.scope.declared` - the declared scope checked against the DICOM header;
* :mod:`bonecls.scope.gate` - :class:`ScopeGate` combines the header rules, ``bonecls.ood``'s
  heuristics and the learned score into one :class:`ScopeVerdict`;
* :mod:`bonecls.scope.fit` - ``python -m bonecls.scope.fit`` fits a model's scope onto its card;
* :mod:`bonecls.scope.evaluation` - risk-coverage and AURC.
"""

from bonecls.scope.gate import ScopeGate, ScopeVerdict

__all__ = ["ScopeGate", "ScopeVerdict"]
