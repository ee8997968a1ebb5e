"""Local relation: k x k window attention with scalar key/query (LR-Net, ICCV 2019).

This file holds the math of the local relation layer; every front end (the
Keras 3 layer, the Model Garden layer, custom kernels) calls it or is tested
against it. Spec: `shared/specs/local_relation.md`. Layout is NHWC.

For output pixel (i, j), group g and window cell (u, v) with
r = k // 2, s = strides, d = dilation_rate:

    cell   = (s*i + d*(u - r), s*j + d*(v - r))
    L      = scale * Phi(q[i, j, g], key[cell, g]) + prior[g, u, v]   (-inf off-image)
    w      = softmax over the k*k cells of L
    y[i, j, g*m + t] = sum_cells w * value[cell, g*m + t]

The formula is written once, per window cell (`_Grid.cell_logits`,
`cell_weighted_value`, ...). Two drivers run it over the k*k cells:

- "reference": a `tf.while_loop`, so the TF executor holds one cell's
  temporaries at a time and the graph stays small in deep models;
- "xla": a static Python loop inside `tf.function(jit_compile=True)`, whose
  constant slice bounds let XLA fuse the whole window into a few kernels.

Neither materialises the k*k-times-larger patch tensor of the values, and the
analytic gradient keeps only the softmax weights `[k*k, B, Ho, Wo, G]`, so
training memory is O(|x| + |logits|).

A third implementation, "custom", is the compiled fused kernel
(`custom_ops/local_relation/`, loaded by `ops.local_relation_kernel`): the
whole window of a pixel at once, keeping only a per-(pixel, group)
log-sum-exp for the backward pass; it is tested against this file. Which
one runs is decided in `ops.local_relation_dispatch`.
"""

import functools
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from keras_relnet.ops import checks, local_relation_kernel, placement
from keras_relnet.ops.local_relation_dispatch import IMPLEMENTATIONS, resolve_implementation
from keras_relnet.ops.portable import portable_graphs_requested
from keras_relnet.ops.precision import compute_dtype

COMPOSABILITIES = ("squared_difference", "dot", "abs_difference")
# Exported graphs put off-image cells this far below the centre cell's logit.
_OFF_IMAGE_GAP = 30.0
STRIDES = (1, 2)

# StridedSlice masks that keep the whole batch (axis 0) and channel (axis 3) axes.
_BATCH_AND_CHANNELS = 0b1001


class Window(NamedTuple):
    """Static description of the relation window (hashable: keys the XLA cache)."""

    kernel_size: int
    strides: int
    dilation_rate: int
    composability: str
    scale: float

    @property
    def radius(self):
        return self.kernel_size // 2

    @property
    def num_cells(self):
        return self.kernel_size * self.kernel_size

    @property
    def padding(self):
        return self.radius * self.dilation_rate


def output_size(size, strides):
    """Output extent `ceil(size / strides)`; works on ints and int tensors.

    Args:
        size: input height or width.
        strides: 1 or 2.

    Returns:
        The output height or width.

    Example:
    >>> output_size(7, 2)
    4
    """
    return (size + strides - 1) // strides


def window_offsets(kernel_size):
    """Relative offsets of the window cells, the input of the geometry prior.

    Args:
        kernel_size: odd window size k.

    Returns:
        float32 array `[k*k, 2]`: `((u - r) / r, (v - r) / r)` for cells in
        row-major `(u, v)` order (all zeros when k = 1).

    Example:
    >>> window_offsets(3)[0]
    array([-1., -1.], dtype=float32)
    """
    kernel_size = checks.check_odd_positive_int("kernel_size", kernel_size)
    radius = kernel_size // 2
    steps = (np.arange(kernel_size) - radius) / max(radius, 1)
    rows, cols = np.meshgrid(steps, steps, indexing="ij")
    return np.stack([rows.ravel(), cols.ravel()], axis=-1).astype(np.float32)


def geometry_prior(
    kernel_size, hidden_kernel, hidden_bias, output_kernel, output_bias
):
    """Learned geometric prior: a 2-layer MLP on the window offsets.

    `P = Dense(h -> G)(relu(Dense(2 -> h)(offsets)))`, computed in float32
    (float64 when the weights are float64); input-independent.

    Args:
        kernel_size: odd window size k.
        hidden_kernel: `[2, h]`.
        hidden_bias: `[h]`.
        output_kernel: `[h, G]`.
        output_bias: `[G]`.

    Returns:
        The prior `[G, k, k]`.

    Example:
    >>> p = geometry_prior(3, tf.ones([2, 4]), tf.zeros([4]), tf.ones([4, 2]),
    ...                    tf.zeros([2]))
    >>> p.shape
    TensorShape([2, 3, 3])
    """
    dtype = compute_dtype(hidden_kernel.dtype)
    offsets = tf.constant(window_offsets(kernel_size), dtype=dtype)
    hidden = tf.nn.relu(
        tf.matmul(offsets, tf.cast(hidden_kernel, dtype))
        + tf.cast(hidden_bias, dtype)
    )
    per_cell = tf.matmul(hidden, tf.cast(output_kernel, dtype)) + tf.cast(
        output_bias, dtype
    )
    return tf.reshape(
        tf.transpose(per_cell), [-1, kernel_size, kernel_size]
    )


def compose(query, key, composability):
    """Appearance term Phi(q, key) of one window cell.

    Args:
        query: query values.
        key: key values, broadcastable against `query`.
        composability: "squared_difference" (`-(q - key)^2`), "dot"
            (`q * key`) or "abs_difference" (`-|q - key|`).

    Returns:
        Phi, the shape of `query - key`.

    Example:
    >>> compose(tf.constant(1.0), tf.constant(3.0), "squared_difference")
    <tf.Tensor: shape=(), dtype=float32, numpy=-4.0>
    """
    if composability == "squared_difference":
        return -tf.square(query - key)
    if composability == "dot":
        return query * key
    if composability == "abs_difference":
        return -tf.abs(query - key)
    checks.check_choice("composability", composability, COMPOSABILITIES)


def _compose_partials(query, key, composability):
    """(dPhi/dq, dPhi/dkey) of `compose`."""
    if composability == "squared_difference":
        twice_difference = 2.0 * (query - key)
        return -twice_difference, twice_difference
    if composability == "dot":
        return key, query
    sign = tf.sign(query - key)
    return -sign, sign


def local_relation(
    query,
    key,
    value,
    geometry_prior,
    *,
    strides=1,
    dilation_rate=1,
    composability="squared_difference",
    scale=1.0,
    implementation="auto",
):
    """Local relation aggregation over k x k windows (the layer's core).

    Computes `y = sum_cells softmax(scale * Phi(q, key) + prior) * value`
    per output pixel and channel group, with off-image cells masked out
    exactly. Softmax and accumulation run in float32 for float16/bfloat16
    inputs (float64 stays float64); the output has the dtype of `value`.

    Args:
        query: `[B, Ho, Wo, G]`, the query at the window centres
            (`Ho = ceil(H / strides)`).
        key: `[B, H, W, G]`.
        value: `[B, H, W, C]` with `C % G == 0`; channel `c` is in group
            `c // (C // G)`.
        geometry_prior: `[G, k, k]` with odd k.
        strides: 1 or 2; output pixel (i, j) centres on input `(s*i, s*j)`.
        dilation_rate: spacing of the window cells.
        composability: one of `COMPOSABILITIES`.
        scale: multiplier of the appearance term.
        implementation: "reference", "xla", "custom" (the compiled kernel)
            or "auto" (`ops.local_relation_dispatch` holds the policy;
            `ops.explain()` says what runs and why).

    Returns:
        `[B, Ho, Wo, C]`.

    Example:
    >>> x = tf.random.normal([1, 5, 5, 4])
    >>> q = tf.random.normal([1, 5, 5, 2])
    >>> y = local_relation(q, q, x, tf.zeros([2, 3, 3]))
    >>> y.shape
    TensorShape([1, 5, 5, 4])
    """
    window = _validated_window(
        query, key, value, geometry_prior, strides, dilation_rate,
        composability, scale,
    )
    if portable_graphs_requested():  # exporting: plain ops only, no XLA, no custom kernel
        return _portable_relation(window)(query, key, value, geometry_prior)
    name, _ = resolve_implementation(implementation, value.dtype,
                                     value.shape[-1] // key.shape[-1], window.kernel_size)
    if name == "custom":
        return local_relation_kernel.fused_local_relation(
            query, key, value, geometry_prior, window.strides, window.dilation_rate,
            window.composability, window.scale)
    if name == "xla":
        relation = _xla_relation(window)
    else:
        # XLA cannot slice at a loop-dependent offset: inside a jit-compiled
        # graph (e.g. `model.compile(jit_compile=True)`) the reference formula
        # runs with the static driver, which XLA compiles.
        relation = _relation(window, unrolled=placement.in_xla_context())
    return relation(query, key, value, geometry_prior)


def local_relation_2d(
    inputs,
    query_kernel,
    key_kernel,
    value_kernel,
    geometry_weights,
    *,
    kernel_size,
    strides=1,
    dilation_rate=1,
    composability="squared_difference",
    scale=1.0,
    implementation="auto",
):
    """The whole local relation layer: projections, prior and aggregation.

    Query `x[:, ::s, ::s] @ query_kernel`, key `x @ key_kernel`, value
    `x @ value_kernel` (or `x` when `value_kernel` is None), prior from
    `geometry_weights`, then `local_relation`.

    Args:
        inputs: `[B, H, W, C]`.
        query_kernel: `[C, G]` (1x1 convolution).
        key_kernel: `[C, G]`.
        value_kernel: `[C, C]` or None (no value projection).
        geometry_weights: `(hidden_kernel, hidden_bias, output_kernel,
            output_bias)` of the prior MLP, see `geometry_prior`.
        kernel_size: odd window size k.
        strides, dilation_rate, composability, scale, implementation: as in
            `local_relation`.

    Returns:
        `[B, ceil(H / s), ceil(W / s), C]`.

    Example:
    >>> x = tf.random.normal([1, 6, 6, 8])
    >>> g = (tf.ones([2, 8]), tf.zeros([8]), tf.ones([8, 2]), tf.zeros([2]))
    >>> y = local_relation_2d(x, tf.ones([8, 2]), tf.ones([8, 2]), None, g,
    ...                       kernel_size=3, strides=2)
    >>> y.shape
    TensorShape([1, 3, 3, 8])
    """
    strides = checks.check_choice("strides", strides, STRIDES)
    centres = inputs[:, ::strides, ::strides, :]
    query = tf.einsum("bhwc,cg->bhwg", centres, query_kernel)
    key = tf.einsum("bhwc,cg->bhwg", inputs, key_kernel)
    value = (
        inputs
        if value_kernel is None
        else tf.einsum("bhwc,cd->bhwd", inputs, value_kernel)
    )
    prior = geometry_prior(kernel_size, *geometry_weights)
    return local_relation(
        query, key, value, prior,
        strides=strides, dilation_rate=dilation_rate,
        composability=composability, scale=scale,
        implementation=implementation,
    )


def local_relation_flops(
    input_size,
    channels,
    channels_per_group,
    kernel_size,
    strides=1,
    value_projection=True,
    geometry_hidden_units=None,
):
    """Multiply-adds of one `local_relation_2d` call for one image.

    Counts the three 1x1 projections, one multiply-add per logit
    (composability + prior), the aggregation (`k*k*C` per output pixel, the
    same as a k x k depthwise convolution) and the prior MLP.

    Args:
        input_size: `(H, W)`.
        channels: C.
        channels_per_group: m.
        kernel_size: k.
        strides: 1 or 2.
        value_projection: whether the C x C value projection runs.
        geometry_hidden_units: h (None: `max(G, 8)`).

    Returns:
        The multiply-add count as an int.

    Example:
    >>> local_relation_flops((56, 56), 64, 8, 7)
    27124048
    """
    height, width = input_size
    groups = channels // channels_per_group
    hidden = geometry_hidden_units or max(groups, 8)
    cells = kernel_size * kernel_size
    inputs = height * width
    outputs = output_size(height, strides) * output_size(width, strides)
    projections = (outputs + inputs) * channels * groups
    if value_projection:
        projections += inputs * channels * channels
    logits = outputs * groups * cells
    aggregation = outputs * channels * cells
    prior = cells * (2 * hidden + hidden * groups)
    return projections + logits + aggregation + prior


def _validated_window(
    query, key, value, prior, strides, dilation_rate, composability, scale
):
    """Checks every argument of `local_relation`; returns its `Window`."""
    strides = checks.check_choice("strides", strides, STRIDES)
    dilation_rate = checks.check_positive_int("dilation_rate", dilation_rate)
    checks.check_choice("composability", composability, COMPOSABILITIES)
    query_shape = checks.check_rank(
        "query", query.shape, 4, "[batch, out_height, out_width, groups]"
    )
    key_shape = checks.check_rank(
        "key", key.shape, 4, "[batch, height, width, groups]"
    )
    value_shape = checks.check_rank(
        "value", value.shape, 4, "[batch, height, width, channels]"
    )
    prior_shape = checks.check_rank(
        "geometry_prior", prior.shape, 3, "[groups, kernel_size, kernel_size]"
    )
    groups, channels = key_shape[-1], value_shape[-1]
    if groups is None or channels is None:
        raise ValueError(
            "`key` and `value` need known channel dimensions; received "
            f"key shape {key_shape} and value shape {value_shape}."
        )
    if query_shape[-1] != groups or prior_shape[0] != groups:
        raise ValueError(
            f"`query`, `key` and `geometry_prior` must have the same number of "
            f"groups; received query shape {query_shape}, key shape "
            f"{key_shape}, geometry_prior shape {prior_shape}."
        )
    if channels % groups:
        raise ValueError(
            f"`value` channels must be a multiple of the {groups} groups; "
            f"received value shape {value_shape}."
        )
    if prior_shape[1] != prior_shape[2]:
        raise ValueError(
            "`geometry_prior` must be square [groups, k, k]; received shape "
            f"{prior_shape}."
        )
    kernel_size = checks.check_odd_positive_int(
        "geometry_prior kernel size", prior_shape[1]
    )
    _check_same_dims("key", key_shape, "value", value_shape, axes=(0, 1, 2))
    expected = tuple(
        None if size is None else output_size(size, strides)
        for size in value_shape[1:3]
    )
    _check_same_dims(
        "query", query_shape[:3],
        f"value (batch, ceil(H / {strides}), ceil(W / {strides}))",
        (value_shape[0],) + expected, axes=(0, 1, 2),
    )
    return Window(kernel_size, strides, dilation_rate, composability,
                  checks.check_finite_number("scale", scale))


def _check_same_dims(name, shape, other_name, other_shape, axes):
    for axis in axes:
        mine, theirs = shape[axis], other_shape[axis]
        if mine is not None and theirs is not None and mine != theirs:
            raise ValueError(
                f"`{name}` shape {shape} does not match {other_name} shape "
                f"{other_shape} on axis {axis}."
            )


def _dims(tensor):
    """Static dims where known, dynamic scalars elsewhere."""
    dynamic = tf.shape(tensor)
    return [
        dynamic[axis] if size is None else size
        for axis, size in enumerate(tensor.shape)
    ]


@functools.lru_cache(maxsize=None)
def _xla_relation(window):
    return tf.function(
        _relation(window, unrolled=True), jit_compile=True, autograph=False
    )


def _relation(window, unrolled):
    """The forward pass with its analytic gradient, for one window spec."""

    @tf.custom_gradient
    def relation(query, key, value, prior):
        dtype = compute_dtype(value.dtype)
        grid = _Grid(window, query, value, dtype, unrolled)
        query_c = tf.cast(query, dtype)
        key_c = tf.cast(key, dtype)
        key_padded = grid.pad(key_c)
        value_padded = grid.pad(tf.cast(value, dtype))
        prior_cells = grid.prior_cells(prior)

        logits = grid.stack_over_cells(
            lambda cell: grid.cell_logits(cell, query_c, key_padded, prior_cells)
        )
        weights = _softmax_over_cells(logits)
        (grouped,) = grid.sum_over_cells(
            lambda cell: (grid.cell_weighted_value(cell, weights, value_padded),),
            (tf.zeros(grid.grouped_output_shape, dtype),),
        )
        output = tf.cast(grid.merge_groups(grouped), value.dtype)

        def gradient(d_output):
            d_output_c = tf.cast(d_output, dtype)
            d_grouped = grid.split_groups(d_output_c)
            d_weights = grid.stack_over_cells(
                lambda cell: grid.cell_weight_gradient(cell, d_grouped, value_padded)
            )
            d_logits = weights * (
                d_weights - tf.reduce_sum(weights * d_weights, 0, keepdims=True)
            )
            d_prior = tf.reshape(
                tf.transpose(tf.reduce_sum(d_logits, [1, 2, 3])), tf.shape(prior)
            )
            padded = dict(
                query=grid.pad(query_c),
                d_output=grid.pad(d_output_c),
                key=key_padded,
            )
            d_query = tf.zeros_like(query_c)
            d_key_phases, d_value_phases = {}, {}
            for phase, cells in grid.phases().items():
                key_phase = grid.at_phase(key_c, phase)
                d_query, d_key_phases[phase], d_value_phases[phase] = grid.sum_over_cells(
                    lambda cell: grid.cell_input_gradients(
                        cell, phase, d_logits, weights, query_c, key_phase, padded),
                    (
                        d_query,
                        tf.zeros_like(key_phase),
                        tf.zeros(grid.phase_shape(phase, grid.groups, grid.group_size),
                                 dtype),
                    ),
                    cells,
                )
            d_key = grid.merge_phases(d_key_phases)
            d_value = grid.merge_phases(
                {phase: grid.merge_groups(t) for phase, t in d_value_phases.items()})
            return (
                tf.cast(d_query, query.dtype),
                tf.cast(d_key, key.dtype),
                tf.cast(d_value, value.dtype),
                tf.cast(d_prior, prior.dtype),
            )

        return output, gradient

    return relation


def _portable_relation(window):
    """The forward pass for export: few, builtin-only ops, all values finite.

    The keys of all cells are stacked on a last axis (`[B, Ho, Wo, G, k*k]`,
    the size of the weights), so the logits are a handful of ops and the
    softmax is TFLite's own (int8 has a table-driven kernel for it); the
    values are summed cell by cell, never stacked. Off-image cells get the
    centre cell's logit minus `_OFF_IMAGE_GAP` instead of -inf: a weight
    below e^-30 of the largest, and every tensor stays finite and in range,
    as int8 calibration needs. No gradient: an export would carry it for
    nothing.
    """

    def relation(query, key, value, prior):
        dtype = compute_dtype(value.dtype)
        grid = _Grid(window, query, value, dtype, unrolled=True)
        cells = window.num_cells
        # The window of a zero-padded ones image is 1 where a cell is in the
        # image: unlike a precomputed mask it adds no k*k*Ho*Wo constant to
        # the file, and as a tensor of its own it quantises exactly (0 and 1).
        stack_cells = lambda padded: tf.stack(
            [grid.at_cell(padded, cell) for cell in range(cells)], -1)
        keys = stack_cells(grid.pad(tf.cast(key, dtype)))  # [B, Ho, Wo, G, k*k]
        inside = stack_cells(grid.pad(tf.ones_like(key[..., :1], dtype)))  # [B, Ho, Wo, 1, k*k]
        logits = _logits(window, tf.expand_dims(tf.cast(query, dtype), -1), keys,
                         tf.reshape(tf.cast(prior, dtype), [grid.groups, cells]))
        floor = logits[..., cells // 2:cells // 2 + 1] - _OFF_IMAGE_GAP  # the centre is inside
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
        output = tf.reshape(rows, _dims(query)[:3] + [grid.channels])
        return tf.cast(output, value.dtype)

    return relation


def _logits(window, query, keys, prior):
    """`scale * Phi(query, keys) + prior`: one cell's logits, or a stack of them."""
    return window.scale * compose(query, keys, window.composability) + prior


def _softmax_over_cells(logits):
    shifted = logits - tf.reduce_max(logits, axis=0, keepdims=True)
    exponentials = tf.exp(shifted)
    return exponentials / tf.reduce_sum(exponentials, axis=0, keepdims=True)


class _Grid:
    """Index arithmetic of one call: where window cell `cell` of every output
    pixel lies in the padded input, and the per-cell pieces of the formula.

    `cell` is a Python int (unrolled driver) or an int32 scalar tensor
    (while-loop driver); every method accepts both.
    """

    def __init__(self, window, query, value, dtype, unrolled):
        self.window = window
        self.unrolled = unrolled
        self.dtype = dtype
        batch, self.height, self.width, self.channels = _dims(value)
        _, self.out_height, self.out_width, self.groups = _dims(query)
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
            begin_mask=_BATCH_AND_CHANNELS,
            end_mask=_BATCH_AND_CHANNELS,
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
        return tf.reshape(grouped, _dims(grouped)[:3] + [self.channels])

    def _border(self, cell):
        k = self.window.kernel_size
        rows = tf.gather(self.row_border, cell // k)
        cols = tf.gather(self.col_border, cell % k)
        return (rows[:, None] + cols[None, :])[None, :, :, None]

    def cell_logits(self, cell, query, key_padded, prior_cells):
        """Logits of window cell `cell`, -inf where it is off the image."""
        return (_logits(self.window, query, self.at_cell(key_padded, cell),
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
        d_phi_d_query, _ = _compose_partials(
            query, self.at_cell(padded["key"], cell), composability
        )
        seen = lambda tensor: self.from_cell(self.pad(tensor), cell, phase)
        _, d_phi_d_key = _compose_partials(
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
