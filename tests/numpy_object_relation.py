"""NumPy object relation module written straight from
`docs/object_relation.md` (the relation module), independent of `keras_relnet.ops`
(float64, explicit loops over coordinates and heads)."""

import numpy as np


def numpy_geometry(boxes, box_format="yxyx", size_offset=0.0):
    """`[B, N, 4]` boxes -> `[B, N, N, 4]` (dx, dy, dw, dh), query i, key j."""
    boxes = np.asarray(boxes, np.float64)
    if box_format == "yxyx":
        y1, x1, y2, x2 = np.moveaxis(boxes, -1, 0)
    else:
        x1, y1, x2, y2 = np.moveaxis(boxes, -1, 0)
    w = np.maximum(x2 - x1 + size_offset, 1e-6)
    h = np.maximum(y2 - y1 + size_offset, 1e-6)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    q, k = (slice(None), slice(None), None), (slice(None), None, slice(None))
    return np.stack([
        np.log(np.maximum(np.abs(cx[q] - cx[k]) / w[q], 1e-3)),
        np.log(np.maximum(np.abs(cy[q] - cy[k]) / h[q], 1e-3)),
        np.log(w[q] / w[k]),
        np.log(h[q] / h[k]),
    ], axis=-1)


def numpy_embedding(geometry, dim=64):
    """Index `c * dim/4 + s * dim/8 + k`: coordinate c, sine (s=0) / cosine, frequency k."""
    out = np.zeros(geometry.shape[:-1] + (dim,))
    for c in range(4):
        for k in range(dim // 8):
            arg = 100 * geometry[..., c] / 1000 ** (8 * k / dim)
            out[..., c * dim // 4 + k] = np.sin(arg)
            out[..., c * dim // 4 + dim // 8 + k] = np.cos(arg)
    return out


def numpy_relation(features, boxes, weights, num_heads, key_mask=None, box_format="yxyx",
                   use_geometry=True):
    """`weights`: query_kernel, query_bias, key_kernel, key_bias, value_kernel,
    output_bias[, geometry_kernel, geometry_bias]; returns (relation, attention)."""
    f = np.asarray(features, np.float64)
    batch, count, _ = f.shape
    wq, bq, wk, bk, wv, bo = weights[:6]
    mask = np.ones((batch, count), bool) if key_mask is None else np.asarray(key_mask, bool)
    q, k, v = f @ wq + bq, f @ wk + bk, f @ wv
    dk, dv = q.shape[-1] // num_heads, v.shape[-1] // num_heads
    if use_geometry:
        wg, bg = weights[6:]
        geometric = np.maximum(numpy_embedding(numpy_geometry(boxes, box_format)) @ wg + bg, 0)
    relation = np.zeros((batch, count, v.shape[-1]))
    attention = np.zeros((batch, num_heads, count, count))
    for b in range(batch):
        for h in range(num_heads):
            qh, kh = q[b, :, h * dk:(h + 1) * dk], k[b, :, h * dk:(h + 1) * dk]
            logits = qh @ kh.T / np.sqrt(dk)
            if use_geometry:
                logits = logits + np.log(np.maximum(geometric[b, :, :, h], 1e-6))
            for i in range(count):
                if not mask[b].any():
                    continue
                e = np.where(mask[b], np.exp(logits[i] - logits[i][mask[b]].max()), 0)
                attention[b, h, i] = e / e.sum()
            relation[b, :, h * dv:(h + 1) * dv] = attention[b, h] @ v[b, :, h * dv:(h + 1) * dv]
    return relation + bo, attention
