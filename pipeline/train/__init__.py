"""Training a built-in network from image rasters and label rasters or label vectors.

One idea per module: ``options`` (what a run is asked for), ``classes`` (names and colours),
``labels`` and ``vectors`` (label sources on the image grid), ``weights`` (class balance and
the U-Net border weight), ``split`` (spatially held-out regions), ``sampling`` (tiles read and
normalized as inference reads them), ``augment`` (flips and 90° rotations), ``loop`` (the
optimizer steps), ``state`` (resume), ``backbone`` (local torchvision backbone weights),
``checkpoint`` (card and checkpoint) and ``run`` (:func:`train`, the whole sequence).
"""
