"""Index arithmetic of the TensorFlow drivers: where each window cell lies."""

import numpy as np
import tensorflow as tf

from keras_relnet.ops.local_relation.window import compose_partials, logits_of

# StridedSlice masks that keep the whole batch (axis 0) and channel (axis 3) axes.
BATCH_AND_CHANNELS = 0b1001


def dims(tensor):
    """Static dims where known, dynamic scalars elsewhere."""
    dynamic = tf.shape(tensor)
    return [
        dynamic[axis] if size is None else size
        for axis, size in enumerate(tensor.shape)
    ]


class Grid:
    """Index arithmetic of one call: where window cell `cell` of every output
    pixel lies in the padded input, and the per-cell pieces of the formula.

    `cell` is a Python int (unrolled driver) or an int32 scalar tensor
    (while-loop driver); every method accepts both.
    """

    def __init__(self, window, query, value, dtype, unrolled):
        self.window = window
        self.unrolled = unrolled
        self.dtype = dtype
        batch, self.height, self.width, self.channels = dims(value)
        _, self.out_height, self.out_width, self.groups = dims(query)
        self.group_size = self.channels // self.groups
        self.grouped_output_shape = [
            batch, self.out_height, self.out_width, self.groups, self.group_size
        ]
        self.grouped_input_shape = [
            batch, self.height, self.width, self.groups, self.group_size
        ]
        self.row_border = self._border_bias(self.height, self.out_height)
        self.col_border = self._border_bias(self.width, self.out_width)

    def _border_bias(self, size, out_size):
        """`[k, out_size]`: 0 where cell row/col u of output i is inside the
        image, -inf where it falls off it."""
        w = self.window
        taps = (tf.range(w.kernel_size) - w.radius) * w.dilation_rate
        positions = taps[:, None] + tf.range(out_size)[None, :] * w.strides
        inside = (positions >= 0) & (positions < size)
        return tf.where(
            inside, tf.constant(0.0, self.dtype), tf.constant(-np.inf, self.dtype)
        )

    def prior_cells(self, prior):
        """`[G, k, k]` prior -> `[k*k, G]`, one row per window cell."""
        return tf.transpose(tf.reshape(tf.cast(prior, self.dtype), [self.groups, -1]))

    def pad(self, tensor):
        p = self.window.padding
        return tf.pad(tensor, [[0, 0], [p, p], [p, p], [0, 0]])

    def _take(self, padded, row, col, height, width, stride):
        """`padded[:, row + stride*i, col + stride*j, :]` for i < height, j < width."""
        view = tf.strided_slice(
            padded,
            [0, row, col, 0],
            [0, row + stride * (height - 1) + 1, col + stride * (width - 1) + 1, 0],
            [1, stride, stride, 1],
            begin_mask=BATCH_AND_CHANNELS,
            end_mask=BATCH_AND_CHANNELS,
        )
        # A loop-dependent `row` hides the static extent; restore what is known.
        static = lambda size: size if isinstance(size, int) else None
        view.set_shape(
            [padded.shape[0], static(height), static(width), padded.shape[3]]
        )
        return view

    def at_cell(self, padded, cell):
        """Forward view: `padded[b, s*i + d*u, s*j + d*v, :]`, window cell
        (u, v) of every output pixel (i, j), from a `pad`-ed input tensor."""
        w = self.window
        row, col = cell // w.kernel_size, cell % w.kernel_size
        return self._take(
            padded, row * w.dilation_rate, col * w.dilation_rate,
            self.out_height, self.out_width, w.strides,
        )

    def phases(self):
        """`{(a, b): cells}`: input pixel `(s*P + a, s*Q + b)` is reached only
        through the window cells (u, v) with `d*(u - r) = a` and
        `d*(v - r) = b` (mod s); one phase when s = 1."""
        w = self.window
        groups = {}
        for cell in range(w.num_cells):
            taps = divmod(cell, w.kernel_size)
            phase = tuple(w.dilation_rate * (t - w.radius) % w.strides for t in taps)
            groups.setdefault(phase, []).append(cell)
        return groups

    def _phase_size(self, size, phase):
        return (size - phase + self.window.strides - 1) // self.window.strides

    def phase_shape(self, phase, *channels):
        """Shape of a phase grid: the input pixels `(s*P + a, s*Q + b)`."""
        return [self.grouped_input_shape[0], self._phase_size(self.height, phase[0]),
                self._phase_size(self.width, phase[1]), *channels]

    def at_phase(self, tensor, phase):
        """The input-grid `tensor` at the pixels of `phase`."""
        s = self.window.strides
        return tensor[:, phase[0]::s, phase[1]::s, :]

    def from_cell(self, padded_output, cell, phase):
        """Backward view, the transpose of `at_cell`: for every input pixel
        of `phase`, the value of `padded_output` (an output-grid tensor, `pad`-
        ded) at the output pixel whose window cell `cell` is that pixel (the
        zero padding where there is none)."""
        w = self.window
        taps = (cell // w.kernel_size, cell % w.kernel_size)
        # Input s*P + a is cell tap t of output P - (d*(t - r) - a) / s.
        begin = [w.padding - (w.dilation_rate * (t - w.radius) - a) // w.strides
                 for t, a in zip(taps, phase)]
        rows, cols = self.phase_shape(phase)[1:3]
        return self._take(padded_output, begin[0], begin[1], rows, cols, 1)

    def merge_phases(self, phase_tensors):
        """Interleaves `{phase: [B, rows, cols, C]}` into the `[B, H, W, C]`
        input grid (phases without cells receive no gradient: zeros)."""
        s = self.window.strides
        if s == 1:
            return phase_tensors[(0, 0)]
        sample = next(iter(phase_tensors.values()))
        rows, cols = self._phase_size(self.height, 0), self._phase_size(self.width, 0)
        full = lambda phase: tf.pad(
            phase_tensors[phase] if phase in phase_tensors
            else tf.zeros(self.phase_shape(phase, sample.shape[-1]), sample.dtype),
            [[0, 0], [0, rows - self._phase_size(self.height, phase[0])],
             [0, cols - self._phase_size(self.width, phase[1])], [0, 0]])
        interleaved = tf.stack(
            [tf.stack([full((a, b)) for b in range(s)], axis=3) for a in range(s)], axis=2)
        batch = self.grouped_input_shape[0]
        merged = tf.reshape(interleaved, [batch, rows * s, cols * s, sample.shape[-1]])
        return merged[:, : self.height, : self.width, :]

    def split_groups(self, tensor):
        """`[B, Ho, Wo, C]` -> `[B, Ho, Wo, G, m]`."""
        return tf.reshape(tensor, self.grouped_output_shape)

    def merge_groups(self, grouped):
        """`[..., G, m]` -> `[..., C]`."""
        return tf.reshape(grouped, dims(grouped)[:3] + [self.channels])

    def _border(self, cell):
        k = self.window.kernel_size
        rows = tf.gather(self.row_border, cell // k)
        cols = tf.gather(self.col_border, cell % k)
        return (rows[:, None] + cols[None, :])[None, :, :, None]

    def celllogits_of(self, cell, query, key_padded, prior_cells):
        """Logits of window cell `cell`, -inf where it is off the image."""
        return (logits_of(self.window, query, self.at_cell(key_padded, cell),
                        tf.gather(prior_cells, cell))
                + self._border(cell))

    def cell_weighted_value(self, cell, weights, value_padded):
        cell_value = self.split_groups(self.at_cell(value_padded, cell))
        return tf.gather(weights, cell)[..., None] * cell_value

    def cell_weight_gradient(self, cell, d_grouped, value_padded):
        cell_value = self.split_groups(self.at_cell(value_padded, cell))
        return tf.reduce_sum(d_grouped * cell_value, axis=-1)

    def cell_input_gradients(self, cell, phase, d_logits, weights, query, key_phase,
                             padded):
        """Cell `cell`'s share of (dL/dquery, dL/dkey, dL/dvalue grouped).

        dquery is gathered at the output pixels; dkey and dvalue at the input
        pixels of `phase`, from the output pixels that see them through this
        cell. `padded` holds the `pad`-ded "query", "d_output" and "key".
        """
        composability = self.window.composability
        d_phi = self.window.scale * tf.gather(d_logits, cell)
        d_phi_d_query, _ = compose_partials(
            query, self.at_cell(padded["key"], cell), composability
        )
        seen = lambda tensor: self.from_cell(self.pad(tensor), cell, phase)
        _, d_phi_d_key = compose_partials(
            self.from_cell(padded["query"], cell, phase), key_phase, composability)
        rows, cols = self.phase_shape(phase)[1:3]
        d_output = tf.reshape(
            self.from_cell(padded["d_output"], cell, phase),
            [self.grouped_input_shape[0], rows, cols, self.groups, self.group_size])
        return (
            d_phi * d_phi_d_query,
            seen(d_phi) * d_phi_d_key,
            seen(tf.gather(weights, cell))[..., None] * d_output,
        )

    def stack_over_cells(self, cell_fn):
        """`[k*k, ...]`: `cell_fn(cell)` for every cell, stacked on axis 0."""
        cells = self.window.num_cells
        if self.unrolled:
            return tf.stack([cell_fn(cell) for cell in range(cells)], axis=0)
        array = tf.TensorArray(self.dtype, size=cells)
        _, array = tf.while_loop(
            lambda cell, _: cell < cells,
            lambda cell, array: (cell + 1, array.write(cell, cell_fn(cell))),
            (tf.constant(0), array),
            parallel_iterations=1,
        )
        return array.stack()

    def sum_over_cells(self, cell_fn, initial, cells=None):
        """Sums the tuples `cell_fn(cell)` over `cells` (default: every
        cell), starting at `initial`."""
        cells = list(range(self.window.num_cells)) if cells is None else cells
        if self.unrolled:
            totals = initial
            for cell in cells:
                totals = tuple(t + x for t, x in zip(totals, cell_fn(cell)))
            return totals
        cell_ids = tf.constant(cells, tf.int32)

        def body(index, *totals):
            terms = cell_fn(cell_ids[index])
            return (index + 1,) + tuple(t + x for t, x in zip(totals, terms))

        results = tf.while_loop(
            lambda index, *_: index < len(cells),
            body,
            (tf.constant(0),) + tuple(initial),
            parallel_iterations=1,
        )
        return tuple(results[1:])
