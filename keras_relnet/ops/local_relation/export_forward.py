"""The local relation forward of exported graphs (SavedModel, TFLite, ONNX).

A fixed spatial size gets the tiled forward (`export_tiles`, ~20 operators a
layer); a dynamic one the per-cell forward below, which is slower (about
five operators per window cell) but takes any size.
"""

import tensorflow as tf

from keras_relnet.ops.local_relation.export_tiles import tiled_relation
from keras_relnet.ops.local_relation.grid import Grid, dims
from keras_relnet.ops.local_relation.window import logits_of
from keras_relnet.ops.precision import compute_dtype

# Exported graphs put off-image cells this far below the centre cell's logit.
OFF_IMAGE_GAP = 30.0


def export_relation(window):
    """The forward pass for export: builtin-only ops, all values finite.

    Args:
        window: the layer's `Window`.

    Returns:
        `relation(query, key, value, prior)`, the aggregation without a
        gradient (an export would carry it for nothing): the tiled forward
        when the query's and value's height and width are static, else
        `per_cell_relation`.
    """
    tiled = tiled_relation(window)
    per_cell = per_cell_relation(window)

    def relation(query, key, value, prior):
        dtype = compute_dtype(value.dtype)
        if None in tuple(query.shape[1:3]) + tuple(value.shape[1:3]):
            return per_cell(query, key, value, prior)
        return tf.cast(tiled(query, key, value, prior, dtype), value.dtype)

    return relation


def per_cell_relation(window):
    """The export forward for dynamic sizes: window cells one by one.

    The keys of all cells are stacked on a last axis (`[B, Ho, Wo, G, k*k]`,
    the size of the weights), so the logits are a handful of ops and the
    softmax is TFLite's own; the values are summed cell by cell, never
    stacked. Off-image cells get the centre cell's logit minus
    `OFF_IMAGE_GAP` instead of -inf: a weight below e^-30 of the largest,
    and every tensor stays finite and in range, as int8 calibration needs.
    """

    def relation(query, key, value, prior):
        dtype = compute_dtype(value.dtype)
        grid = Grid(window, query, value, dtype, unrolled=True)
        cells = window.num_cells
        # The window of a zero-padded ones image is 1 where a cell is in the
        # image: unlike a precomputed mask it needs no static size.
        stack_cells = lambda padded: tf.stack(
            [grid.at_cell(padded, cell) for cell in range(cells)], -1)
        keys = stack_cells(grid.pad(tf.cast(key, dtype)))  # [B, Ho, Wo, G, k*k]
        inside = stack_cells(grid.pad(tf.ones_like(key[..., :1], dtype)))  # [B, Ho, Wo, 1, k*k]
        logits = logits_of(window, tf.expand_dims(tf.cast(query, dtype), -1), keys,
                         tf.reshape(tf.cast(prior, dtype), [grid.groups, cells]))
        floor = logits[..., cells // 2:cells // 2 + 1] - OFF_IMAGE_GAP  # the centre is inside
        weights = tf.nn.softmax(floor + inside * (logits - floor))
        # TFLite slices at most 5-D tensors: one row per (pixel, group),
        # `[B*Ho*Wo*G, 1]` weights times `[B*Ho*Wo*G, m]` values per cell.
        cell_weights = tf.unstack(tf.expand_dims(
            tf.transpose(tf.reshape(weights, [-1, cells])), -1))
        value_padded = grid.pad(tf.cast(value, dtype))
        cell_value = lambda cell: tf.reshape(grid.at_cell(value_padded, cell),
                                             [-1, grid.group_size])
        rows = cell_weights[0] * cell_value(0)
        for cell in range(1, cells):
            rows += cell_weights[cell] * cell_value(cell)
        output = tf.reshape(rows, dims(query)[:3] + [grid.channels])
        return tf.cast(output, value.dtype)

    return relation
