"""Train a Keras classifier with seed 004's recipe on prepared shards (InceptionV3 / Xception / small CNN).

    python train/keras_transfer.py --data data/prepared/threeclass --output weights/threeclass-inception \
        --model inception_v3 --weights imagenet --epochs 30

Needs TensorFlow (``pip install -r requirements-keras.txt``). Uses every visible GPU through
``tf.distribute.MirroredStrategy`` (``--batch-size`` is per GPU). Writes ``model.keras`` + ``card.json``,
which the app serves like any PyTorch model. See ``--help`` and bonecls/training/keras_transfer.py.
"""

from __future__ import annotations

import sys

from bonecls.training.keras_transfer import main

if __name__ == "__main__":
    sys.exit(main())
