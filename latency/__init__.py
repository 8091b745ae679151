"""Latency on the target device: ONNX Runtime measurement, int8, lookup tables and predictors.

The measurement modules (``measure``, ``device``, ``quantize``, ``lut_store``, ``device_lut``) need
only onnxruntime, numpy (and onnx for int8), so they also run on a device without torch; ``lut``
builds table entries from the layer walk of :mod:`search_spaces`. This file imports nothing, so a
bundle for another device can carry the package as it is.
"""
