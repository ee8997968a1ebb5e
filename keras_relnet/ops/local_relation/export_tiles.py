"""The fixed-size export forward: output tiles, one softmax, one batch matmul.

The output grid is cut into tiles of `rows x cols` pixels. Every tile reads
one input window (its pixels' k x k windows together, `span_rows x
span_cols` pixels), which one gather with a constant index copies out for
the keys and one for the values, already in the matmul's layout. Each
pixel's attention weights are then a row over its tile's whole window: the
cells of its own k x k window get their logits, every other position a
large negative bias, so after the softmax they weigh exactly 0. One batch
matmul per (tile, group), `[pixels, window] @ [window, m]`, sums the values.
The graph is about twenty builtin operators per layer whatever k is; the
cost is the zero band, which the tile shape trades against the number of
matmuls (`choose_tiling`).
"""

from typing import NamedTuple

import numpy as np
import tensorflow as tf


# The bias of window positions a pixel does not attend to: finite, so every
# tensor of the graph is finite (int8 calibration needs that), and far below
# any logit, so exp() of it is 0.
EXCLUDED = -1e30
# Cost model of `choose_tiling` (ns on XNNPACK, measured on a 2-core x86):
# each matmul of the batch costs a fixed overhead, each weight entry (logit,
# softmax, matmul read) a fixed time.
_NS_PER_MATMUL = 1200.0
_NS_PER_WEIGHT = 1.25
_MAX_TILE = 8


class Tiling(NamedTuple):
    """Output tiles of `rows x cols` pixels, `row_tiles x col_tiles` of them."""

    rows: int
    cols: int
    row_tiles: int
    col_tiles: int

    @property
    def pixels(self):
        return self.rows * self.cols

    @property
    def tiles(self):
        return self.row_tiles * self.col_tiles

    @property
    def padded_shape(self):
        return self.row_tiles * self.rows, self.col_tiles * self.cols


def span(window, pixels):
    """Input pixels covered by the windows of `pixels` adjacent output pixels."""
    return window.strides * (pixels - 1) + window.dilation_rate * (window.kernel_size - 1) + 1


def axis_positions(window, pixels, tiles, size):
    """`[tiles, positions]`: the input coordinates (in the image padded by
    `window.padding`) that each tile's window covers along one axis. A lone
    tile's window is cropped to the image: what lies off it is off-image for
    every pixel, so it would only add excluded positions."""
    s, p, length = window.strides, window.padding, span(window, pixels)
    if tiles == 1:
        return np.arange(p, min(length, p + size))[None]
    return s * pixels * np.arange(tiles)[:, None] + np.arange(length)[None]


def choose_tiling(window, out_height, out_width, groups, height=None, width=None):
    """The tile shape with the lowest modelled cost for this output grid.

    Args:
        window: the layer's `Window`.
        out_height, out_width: the output grid.
        groups: the number of channel groups (matmuls per tile).
        height, width: the input grid (default: the output grid times the stride).

    Returns:
        A `Tiling`.

    Example:
    >>> from keras_relnet.ops.local_relation.window import Window
    >>> choose_tiling(Window(7, 1, 1, "squared_difference", 1.0), 56, 56, 13)
    Tiling(rows=4, cols=4, row_tiles=14, col_tiles=14)
    """
    height = height or window.strides * out_height
    width = width or window.strides * out_width
    # Tile sides up to _MAX_TILE, and the whole side when one tile fits it.
    sides = lambda size: sorted(set(range(1, min(_MAX_TILE, size) + 1)) | (
        {size} if size <= 2 * _MAX_TILE else set()))
    best = None
    for rows in sides(out_height):
        for cols in sides(out_width):
            tiling = Tiling(rows, cols, -(-out_height // rows), -(-out_width // cols))
            matmuls = tiling.tiles * groups
            positions = (axis_positions(window, rows, tiling.row_tiles, height).shape[1]
                         * axis_positions(window, cols, tiling.col_tiles, width).shape[1])
            weights = matmuls * tiling.pixels * positions
            cost = _NS_PER_MATMUL * matmuls + _NS_PER_WEIGHT * weights
            if best is None or cost < best[0]:
                best = (cost, tiling)
    return best[1]


def _window_pixels(row_positions, col_positions, height, width, padding):
    """`[tiles, positions]`: the flat image pixel (`y * width + x`) of every
    tile's window positions (column-major), given in the image padded by
    `padding`. Positions off the image read the nearest image pixel instead
    of a zero pad: their attention weight is exactly 0, so any finite value
    does, and no tensor is copied into a padded one."""
    rows = np.clip(row_positions - padding, 0, height - 1)
    cols = np.clip(col_positions - padding, 0, width - 1)
    pixel = rows[:, None, None, :] * width + cols[None, :, :, None]
    return pixel.reshape(-1, pixel.shape[2] * pixel.shape[3])


def tile_windows(tensor, row_positions, col_positions, groups, padding):
    """Every (tile, group)'s input window, `[B, tiles * groups, positions, m]`
    (`m = X / groups`), from `tensor` `[B, H, W, X]` and each tile's window
    coordinates in the image padded by `padding` (`axis_positions`).

    One gather with a constant index: it copies runs of m values, and the
    result is already in the layout of the aggregation's batch matmul.
    """
    _, height, width, channels = tensor.shape
    flat = tf.reshape(tensor, [-1, height * width * groups, channels // groups])
    pixel = _window_pixels(row_positions, col_positions, height, width, padding)
    index = pixel[:, None, :] * groups + np.arange(groups)[None, :, None]
    return tf.gather(flat, index.reshape(-1, index.shape[2]).astype(np.int32), axis=1)


def tile_key_windows(key, row_positions, col_positions, padding):
    """`[B, tiles, G, positions]`: every tile's window of the `[B, H, W, G]`
    keys. The gather copies each position's G keys together and a transpose
    of the (small) result puts groups first: gathering single floats straight
    into that layout was slower in onnxruntime than both together."""
    _, height, width, groups = key.shape
    pixel = _window_pixels(row_positions, col_positions, height, width, padding)
    windows = tf.gather(tf.reshape(key, [-1, height * width, groups]),
                        pixel.astype(np.int32), axis=1)  # [B, tiles, positions, G]
    return tf.transpose(windows, [0, 1, 3, 2])


def _window_cells(window, tiling, row_offsets, col_offsets):
    """`[pixels, positions]`: the window cell (row-major index) that each tile
    pixel sees at each window position, `num_cells` where none; the offsets
    are the window positions relative to the tile's first pixel's window."""
    k, s, d = window.kernel_size, window.strides, window.dilation_rate
    cols, rows = np.meshgrid(col_offsets, row_offsets, indexing="ij")
    cells = np.full((tiling.rows, tiling.cols) + cols.shape, window.num_cells, np.int32)
    for a in range(tiling.rows):
        for b in range(tiling.cols):
            du, dv = rows - s * a, cols - s * b
            seen = ((du >= 0) & (du % d == 0) & (du // d < k)
                    & (dv >= 0) & (dv % d == 0) & (dv // d < k))
            cells[a, b] = np.where(seen, (du // d) * k + dv // d, window.num_cells)
    return cells.reshape(tiling.pixels, -1)


def _off_image_bias(window, row_positions, col_positions, height, width):
    """`[tiles, 1, 1, positions]`: `EXCLUDED` at window positions off the
    image (the zero padding), else 0."""
    p = window.padding
    row_inside = (row_positions >= p) & (row_positions < p + height)
    col_inside = (col_positions >= p) & (col_positions < p + width)
    inside = col_inside[None, :, :, None] & row_inside[:, None, None, :]
    return np.where(inside, 0.0, EXCLUDED).astype(np.float32).reshape(
        inside.shape[0] * inside.shape[1], 1, 1, -1)


def _masked_logits(window, query, keys, prior, off_image):
    """`scale * Phi(query, keys) + prior + off_image`, up to a constant per
    pixel, which the softmax ignores.

    `-(q - k)^2 = 2qk - k^2 - q^2`: the `q^2` term is the same for all of a
    pixel's window positions, so it is dropped, and the logits are one
    product of the query with a per-key factor plus a per-key bias, which is
    also where the off-image mask goes. That is three passes over the band
    (multiply, add the key bias, add the prior) instead of five, and no
    constant the size of the logits (tf2onnx would fold prior + mask into
    one). |q - k| does not split; it keeps the direct form.
    """
    scale, composability = window.scale, window.composability
    if composability == "abs_difference":
        factor = -scale
        if abs(factor) < 1e-6:  # off_image / factor would overflow
            return factor * tf.abs(query - keys) + (prior + tf.constant(off_image, prior.dtype))
        return factor * (tf.abs(query - keys) + tf.constant(off_image / factor, prior.dtype)) + prior
    off_image = tf.constant(off_image, keys.dtype)
    if composability == "dot":
        key_factor, key_bias = scale * keys, off_image
    else:
        key_factor, key_bias = (2.0 * scale) * keys, off_image - scale * tf.square(keys)
    return query * key_factor + key_bias + prior


def tiled_relation(window):
    """The aggregation for a fixed spatial size (`[B, Ho, Wo, G]` query with
    static Ho, Wo; the batch may be dynamic). No gradient: export only."""

    def relation(query, key, value, prior, dtype):
        _, height, width, channels = value.shape
        _, out_height, out_width, groups = query.shape
        group_size = channels // groups
        tiling = choose_tiling(window, out_height, out_width, groups, height, width)
        row_positions = axis_positions(window, tiling.rows, tiling.row_tiles, height)
        col_positions = axis_positions(window, tiling.cols, tiling.col_tiles, width)
        positions = row_positions.shape[1] * col_positions.shape[1]
        padded_height, padded_width = tiling.padded_shape
        # The prior of each (group, pixel, window position), EXCLUDED off the
        # pixel's window. The mask is added after the gather: through a gather,
        # -1e30 would set the int8 range of the prior and erase it.
        cells = _window_cells(window, tiling, row_positions[0], col_positions[0])
        unseen = cells == window.num_cells
        band_prior = tf.gather(tf.reshape(tf.cast(prior, dtype), [groups, -1]),
                               np.where(unseen, 0, cells), axis=1) + tf.constant(
                                   np.where(unseen, EXCLUDED, 0.0), dtype)
        # A reshape, not expand_dims: XNNPACK delegates no EXPAND_DIMS.
        keys = tf.reshape(tile_key_windows(tf.cast(key, dtype), row_positions, col_positions,
                                           window.padding), [-1, tiling.tiles, groups, 1, positions])
        tiles_overrun = (padded_height, padded_width) != (out_height, out_width)
        tiled_query = tf.cast(query, dtype)
        if tiles_overrun:
            tiled_query = tf.pad(tiled_query, [[0, 0], [0, padded_height - out_height],
                                               [0, padded_width - out_width], [0, 0]])
        # At most 6-D tensors: TFLite's limit (the batch is merged with the tile rows).
        tiled_query = tf.reshape(tf.transpose(
            tf.reshape(tiled_query, [-1, tiling.rows, tiling.col_tiles, tiling.cols, groups]),
            [0, 2, 4, 1, 3]), [-1, tiling.tiles, groups, tiling.pixels, 1])
        off_image = _off_image_bias(window, row_positions, col_positions, height, width)
        weights = tf.nn.softmax(_masked_logits(window, tiled_query, keys, band_prior, off_image))
        values = tf.reshape(tile_windows(tf.cast(value, dtype), row_positions, col_positions,
                                         groups, window.padding), [-1, positions, group_size])
        summed = tf.matmul(tf.reshape(weights, [-1, tiling.pixels, positions]),
                           values)  # [B * tiles * G, pixels, m]
        output = tf.transpose(
            tf.reshape(summed, [-1, tiling.col_tiles, groups, tiling.rows, tiling.cols,
                                group_size]), [0, 3, 1, 4, 2, 5])
        output = tf.reshape(output, [-1, padded_height, padded_width, channels])
        if tiles_overrun:
            output = output[:, :out_height, :out_width]
        return output

    return relation
