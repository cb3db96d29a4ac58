"""Instances: every object of the chosen classes one id on the whole image, block by block.

Here live the pieces of the instance pass that need no CLI or work directory: the options
(:mod:`.options`), the instances of one block computed from its core plus a halo and kept by
the block that holds their anchor pixel, with touching objects optionally separated by a
watershed (:mod:`.block`), the canonical numbering (ids from 1 in raster order of each object's
first pixel: :mod:`.canonical`), the exact relabelling of plain components from the seam join's
offsets and union pairs (:mod:`.relabel`), per-instance measurements with the definitions of
``skimage.measure.regionprops`` (:mod:`.measure`) and QuPath detections as GeoJSON
(:mod:`.detections`).

A run wires them together: the flags (:mod:`.request`, ``RunOptions.instances``), the instance
pass between the segment and export stages writing ``instances.zarr`` in the work directory
(:mod:`.stage`), the measurements CSV and detections GeoJSON of the export (:mod:`.tables`)
and the counts in the summary (:mod:`.summary`).
"""
