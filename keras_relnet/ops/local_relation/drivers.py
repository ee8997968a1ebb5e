"""The TensorFlow drivers of the local relation, with the analytic gradient.

The formula is written once, per window cell (`Grid.cell_logits`,
`Grid.cell_weighted_value`, ...). Two drivers run it over the k*k cells:

- "reference": a `tf.while_loop`, so the TF executor holds one cell's
  temporaries at a time and the graph stays small in deep models;
- "xla": a static Python loop inside `tf.function(jit_compile=True)`, whose
  constant slice bounds let XLA fuse the whole window into a few kernels.

Neither materialises the k*k-times-larger patch tensor of the values, and the
gradient keeps only the softmax weights `[k*k, B, Ho, Wo, G]`, so training
memory is O(|x| + |logits|). Both are tested against `reference.py`.
"""

import functools

import tensorflow as tf

from keras_relnet.ops.local_relation.grid import Grid
from keras_relnet.ops.precision import compute_dtype


@functools.lru_cache(maxsize=None)
def xla_relation(window):
    return tf.function(
        traced_relation(window, unrolled=True), jit_compile=True, autograph=False
    )


def traced_relation(window, unrolled):
    """The forward pass with its analytic gradient, for one window spec."""

    @tf.custom_gradient
    def relation(query, key, value, prior):
        dtype = compute_dtype(value.dtype)
        grid = Grid(window, query, value, dtype, unrolled)
        query_c = tf.cast(query, dtype)
        key_c = tf.cast(key, dtype)
        key_padded = grid.pad(key_c)
        value_padded = grid.pad(tf.cast(value, dtype))
        prior_cells = grid.prior_cells(prior)

        logits = grid.stack_over_cells(
            lambda cell: grid.celllogits_of(cell, query_c, key_padded, prior_cells)
        )
        weights = softmax_over_cells(logits)
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


def softmax_over_cells(logits):
    shifted = logits - tf.reduce_max(logits, axis=0, keepdims=True)
    exponentials = tf.exp(shifted)
    return exponentials / tf.reduce_sum(exponentials, axis=0, keepdims=True)
