"""ONNX export of any spec (or any module built from one).

We use the TorchScript exporter (``dynamo=False``; ``torch.onnx.export`` defaults to the dynamo
exporter since torch 2.9, https://docs.pytorch.org/docs/stable/onnx.html), opset 17, a single file
(no external data): it runs offline without ``onnxscript`` and honours the requested opset exactly.
In a one-off trial on the development VM (torch 2.13, a MobileNetV3-Small-sized network) the dynamo
exporter, asked for opset 17, produced opset 18, and took ~6 s to export against ~1 s — which
matters when every search trial is exported — while the two exports' latencies agreed within 1 %.
:func:`_lean` drops the ``Identity`` and ``Constant`` nodes the TorchScript exporter adds (the
README's "Measured results" lists the exported MobileNetV3-Large graph). BatchNorm is exported as
``BatchNormalization`` in eval mode and folded into the convs by ONNX Runtime's graph optimizer;
h-swish and hard-sigmoid are exported as the native ``HardSwish``/``HardSigmoid`` ops.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import torch
from torch import nn

from search_spaces.files import atomic_write_bytes
from search_spaces.spec import ArchSpec

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
BOXES_NAME = "boxes"  # second output of a detection network (SSDLite's box regressions)


def output_names(spec: ArchSpec | None) -> list[str]:
    """ONNX output names: ``logits`` (class or per-pixel logits, detection scores), then ``boxes`` for SSDLite."""
    if spec is not None and spec.dense is not None and not spec.dense.is_segmentation:
        return [OUTPUT_NAME, BOXES_NAME]
    return [OUTPUT_NAME]


def export_module_bytes(model: nn.Module, input_shape: tuple[int, ...], opset: int = OPSET,
                        names: list[str] | None = None) -> bytes:
    """Serialize ``model`` (in eval mode, batch 1) to ONNX bytes.

    Args:
        model: any module; it is switched to eval mode for the export and restored afterwards.
        input_shape: full input shape including the batch dimension, e.g. ``(1, 3, 224, 224)``.
        opset: ONNX opset (≥ 17).
        names: output names; defaults to :func:`output_names` of the model's ``spec`` attribute.
    """
    if opset < 17:
        raise ValueError(f"opset must be >= 17 (the project measures and tests opset 17), got {opset}")
    was_training = model.training
    model.eval()
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            # The TorchScript exporter is deprecated in favour of dynamo; see the module docstring.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (torch.zeros(input_shape),),
                buf,
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=names or output_names(getattr(model, "spec", None)),
                do_constant_folding=True,
            )
    finally:
        model.train(was_training)
    return _lean(buf.getvalue())


def _lean(data: bytes) -> bytes:
    """Drop what the TorchScript exporter adds beyond the network itself.

    It emits ``Identity`` nodes when it de-duplicates equal initializers (e.g. the zero biases of
    freshly folded BatchNorms) and ``Constant`` nodes for ReLU6's clip bounds. Runtimes fold both
    away, but they inflate the graph users and tools inspect, so they become plain initializers.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(data)
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    rename: dict[str, str] = {}
    keep = []
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] not in outputs and len(node.attribute) == 1 \
                and node.attribute[0].name == "value":
            tensor = numpy_helper.to_array(node.attribute[0].t)
            graph.initializer.append(numpy_helper.from_array(tensor, node.output[0]))
            initializers.add(node.output[0])
            continue
        if node.op_type == "Identity" and node.input[0] in initializers and node.output[0] not in outputs:
            rename[node.output[0]] = node.input[0]
            continue
        keep.append(node)
    for node in keep:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    del graph.node[:]
    graph.node.extend(keep)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def export_onnx(
    spec_or_model: ArchSpec | nn.Module,
    path: str | Path | None = None,
    *,
    resolution: int | None = None,
    in_channels: int | None = None,
    opset: int = OPSET,
) -> bytes:
    """Export a spec (built with fresh weights) or a built model to ONNX; write ``path`` atomically.

    Args:
        spec_or_model: an :class:`ArchSpec`, or a module built from one (with trained weights).
        path: where to write the ``.onnx`` file; None only returns the bytes.
        resolution: input height = width; defaults to the spec's (deployment) resolution.
        in_channels: input channels; defaults to the spec's.

    Returns:
        The serialized model.
    """
    if isinstance(spec_or_model, ArchSpec):
        from search_spaces.builder import build_model

        spec, model = spec_or_model, build_model(spec_or_model)
    else:
        model = spec_or_model
        spec = getattr(model, "spec", None)
        if spec is None and (resolution is None or in_channels is None):
            raise ValueError("a module without .spec needs resolution and in_channels")
    res = resolution or spec.resolution
    cin = in_channels or spec.in_channels
    data = export_module_bytes(model, (1, cin, res, res), opset)
    if path is not None:
        atomic_write_bytes(Path(path), data)
    return data
