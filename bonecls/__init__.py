"""bonecls: an X-ray reading aid (fracture, three-class, pneumonia) with Grad-CAM explanations.

A reading aid, not a diagnosis. The shipped models were trained on synthetic phantoms rendered
from one CT and are not for clinical use.
"""

from bonecls.errors import BoneclsError, DataError, ImageError, WeightsError

__version__ = "0.1.0"

__all__ = ["BoneclsError", "DataError", "ImageError", "WeightsError", "__version__"]
