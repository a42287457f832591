"""The pages' bodies, one module per page; ``pages/*.py`` at the repository root are shims calling them.

- :mod:`.home`: upload, examples, the session's image list
- :mod:`.classifier`: the Fracture and Fracture severity pages (one body, two tasks)
- :mod:`.pneumonia`: detector boxes with a confidence slider, classifier probability, heat maps
- :mod:`.model_cards`: installed model cards with their test metrics, and the audit log
- :mod:`.worklist`: many images ranked by suspicion, CSV/JSON exports

Nothing is imported here, so a page loads only what it draws.
"""
