"""The paper's architecture table (MobileNetV3 Tables 1–2), built from the layer walk and costs."""

from __future__ import annotations

from search_spaces.cost import count
from search_spaces.spec import Activation, ArchSpec
from search_spaces.walk import LayerKind, Role

_NL = {Activation.RELU: "RE", Activation.RELU6: "RE6", Activation.HSWISH: "HS", Activation.SWISH: "SW", None: "-"}
COLUMNS = ("#", "input", "operator", "exp size", "#out", "SE", "NL", "s", "params", "MAdds")


def _operator(layer) -> str:
    k = layer.key
    if k.kind is LayerKind.POOL:
        return f"pool {k.kernel_size}x{k.kernel_size}"
    if k.kind is LayerKind.LINEAR:
        return "conv2d 1x1, NBN"
    if k.kind is LayerKind.CONV:
        return f"conv2d {k.kernel_size}x{k.kernel_size}" + ("" if k.batchnorm else ", NBN")
    if k.kind is LayerKind.DWCONV:
        return f"dwconv {k.kernel_size}x{k.kernel_size}"
    if k.kind not in (LayerKind.MBCONV, LayerKind.DSCONV):  # dense heads' gate, upsample, sums, ...
        return k.kind.value
    name = "bneck" if k.kind is LayerKind.MBCONV else "sepconv"
    return f"{name} {k.kernel_size}x{k.kernel_size}" + (" +res" if k.residual else "")


def arch_rows(spec: ArchSpec, resolution: int | None = None) -> list[dict]:
    """One dict per layer with the paper's columns, plus params and MAdds."""
    rows = []
    for layer, cost in count(spec, resolution).layers:
        k = layer.key
        block = layer.role is Role.BLOCK
        rows.append(
            {
                "#": layer.index,
                "role": layer.role.value,
                "input": f"{k.resolution}²×{k.in_channels}",
                "operator": _operator(layer),
                "exp size": k.expand_channels if block else None,
                "#out": k.out_channels if k.kind is not LayerKind.POOL else None,
                "SE": bool(k.se_channels),
                "se_channels": k.se_channels,
                "NL": _NL[k.activation],
                "s": k.stride,
                "params": cost.params,
                "MAdds": cost.madds,
            }
        )
    return rows


def format_table(spec: ArchSpec, resolution: int | None = None) -> str:
    """A plain-text table for terminals."""
    rows = arch_rows(spec, resolution)
    cells = [list(COLUMNS)]
    for r in rows:
        cells.append(
            [
                str(r["#"]), r["input"], r["operator"],
                "-" if r["exp size"] is None else str(r["exp size"]),
                "-" if r["#out"] is None else str(r["#out"]),
                "✓" if r["SE"] else "-", r["NL"], str(r["s"]),
                f"{r['params']:,}", f"{r['MAdds'] / 1e6:.2f}M",
            ]
        )
    c = count(spec, resolution)
    cells.append(["", "", "total", "", "", "", "", "", f"{c.params:,}", f"{c.madds / 1e6:.2f}M"])
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    right = {0, 3, 4, 7, 8, 9}
    lines = []
    for n, row in enumerate(cells):
        padded = (v.rjust(w) if i in right else v.ljust(w) for i, (v, w) in enumerate(zip(row, widths)))
        lines.append("  ".join(padded).rstrip())
        if n == 0 or n == len(cells) - 2:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
