#!/bin/sh
# Wheels that benchmarks/gpu.py needs on a CUDA machine whose Python (3.12) has torch, numpy,
# scipy, psutil, pillow, onnxruntime but not segpipe's raster stack. Run HERE (where pip works),
# from the repository root; then carry .whl to the GPU machine and install with
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
#   export PYTHONPATH=/tmp/site
# (BENCHMARKS.md, "GPU"). About 52 MiB. torchvision (for --arch deeplabv3_resnet50 …) must
# match the machine's torch: 0.26.0 goes with the torch 2.11 found there; change both together.
set -eu
exclude="$(git rev-parse --git-common-dir)/info/exclude"
grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 -d .whl \
  rasterio==1.4.4 zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0 \
  affine==3.0.1 cligj==0.7.2 click-plugins==1.1.1.2 pyparsing==3.3.3 torchvision==0.26.0
ls -la .whl
