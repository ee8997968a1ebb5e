"""Object relation module: multi-head attention between objects with a
relative-geometry term (Hu et al., "Relation Networks for Object Detection",
CVPR 2018). The math: `docs/object_relation.md`.

For query i, key j and head h:

    w_G  = ReLU(E(G_ij) . W_G[:, h] + b_G[h])          geometric weight
    a    = (f_i W_Q)_h . (f_j W_K)_h / sqrt(d_k)       appearance logit
    A    = softmax_j(log(max(w_G, 1e-6)) + a)           over unmasked keys
    r_i  = concat_h(sum_j A_ij (v_j W_V)_h) + b         per-head output map

The geometry embedding E is `N * N * geometry_dim` floats per image (256 MB at
N = 1000, fp32), so it is built per chunk of queries: peak memory is
`chunk * N * geometry_dim`, not `N^2 * geometry_dim`.

Boxes with a non-finite coordinate: such an object is not a key, and its own
relation is that of a query with no keys (zero, plus the output bias); every
other object gets exactly the result it gets with that object masked out.
Masked keys contribute exact zeros, even when their features are not finite.
"""

import math
from typing import NamedTuple, Optional

import tensorflow as tf

from keras_relnet.ops import object_inputs
from keras_relnet.ops.box_geometry import geometry_embedding, relative_geometry
from keras_relnet.ops.context import dense
from keras_relnet.ops.portable import portable_graphs_requested
from keras_relnet.ops.precision import at_least_float32, compute_dtype

_MIN_GEOMETRIC_WEIGHT = 1e-6
_MASKED_LOGIT = -1e9


class RelationWeights(NamedTuple):
    """The weights of one object relation module.

    `query_kernel`/`key_kernel`: `[D, heads * key_dim]`; `value_kernel`:
    `[D_v, D_out]` (head h owns columns `h * D_out/heads ..`); the geometry
    weights are None without the geometric term.
    """

    query_kernel: tf.Tensor
    query_bias: tf.Tensor
    key_kernel: tf.Tensor
    key_bias: tf.Tensor
    value_kernel: tf.Tensor
    output_bias: tf.Tensor
    geometry_kernel: Optional[tf.Tensor] = None
    geometry_bias: Optional[tf.Tensor] = None


def object_relation(features, boxes, weights, num_heads, key_mask=None, values=None,
                    box_format="yxyx", size_offset=0.0, geometry_dim=64,
                    query_chunk_size=256, return_attention=False):
    """Relation features of every object from all (unmasked) objects.

    Args:
        features: `[B, N, D]` appearance features (queries and keys).
        boxes: `[B, N, 4]`.
        weights: `RelationWeights`.
        num_heads: number of heads; divides the key and output widths.
        key_mask: `[B, N]` bool, False for objects that are not keys (padding).
            A query whose keys are all masked gets a zero relation (plus bias).
            Objects whose box has a non-finite coordinate are never keys and
            get that zero relation too.
        values: `[B, N, D_v]` aggregated values; None means `features`.
        box_format, size_offset: see `box_geometry.relative_geometry`.
        geometry_dim: size of the geometry embedding.
        query_chunk_size: queries per chunk (bounds memory); None: one chunk.
        return_attention: also return the attention weights.

    Returns:
        `[B, N, D_out]` relation features in the feature dtype, and with
        `return_attention` the float32 weights `[B, heads, N, N]`.

    Raises:
        ValueError: when the inputs disagree on the batch or object count,
            or the widths differ from the weights'.

    Example:
    >>> d, h = 8, 2
    >>> w = RelationWeights(tf.ones([d, d]), tf.zeros([d]), tf.ones([d, d]),
    ...                     tf.zeros([d]), tf.eye(d), tf.zeros([d]))
    >>> features = tf.ones([1, 3, d])
    >>> boxes = tf.constant([[[0.0, 0, 1, 1], [0, 1, 1, 2], [1, 1, 2, 2]]])
    >>> object_relation(features, boxes, w, h).shape
    TensorShape([1, 3, 8])
    """
    features, boxes, key_mask, values = _checked_inputs(features, boxes, key_mask, values,
                                                        weights)
    batch, count = tf.shape(features)[0], tf.shape(features)[1]
    finite, boxes = object_inputs.finite_boxes(boxes)
    key_mask = finite if key_mask is None else key_mask & finite
    split = lambda t: tf.reshape(t, [batch, count, num_heads, t.shape[-1] // num_heads])
    # expand_dims, not [..., None]: TFLite has no builtin strided slice of bools.
    is_key = tf.expand_dims(tf.expand_dims(key_mask, -1), -1)
    not_key = lambda t: tf.where(is_key, t, tf.zeros_like(t))
    queries = split(_project(features, weights.query_kernel, weights.query_bias))
    keys = not_key(split(_project(features, weights.key_kernel, weights.key_bias)))
    projected_values = not_key(split(_project(values, weights.value_kernel)))
    attend = lambda chunk_queries, chunk_boxes: _attend(
        chunk_queries, chunk_boxes, keys, projected_values, boxes, key_mask,
        weights, box_format, size_offset, geometry_dim)
    relation, attention = _by_query_chunks(attend, queries, boxes, query_chunk_size,
                                           return_attention)
    relation = tf.reshape(relation, [batch, count, weights.value_kernel.shape[-1]])
    relation = tf.where(tf.expand_dims(finite, -1), relation, tf.zeros_like(relation))
    relation += tf.cast(weights.output_bias, relation.dtype)
    if not return_attention:
        return relation
    finite_queries = tf.expand_dims(tf.expand_dims(finite, 1), -1)  # [B, 1, N, 1]
    return relation, tf.where(finite_queries, attention, tf.zeros_like(attention))


def _checked_inputs(features, boxes, key_mask, values, weights):
    """`(features, boxes, key_mask, values)` once their shapes agree with each
    other and with the weights (see `object_inputs`); `values` defaults to
    `features`."""
    object_inputs.check_rank("features", features, 3, "[batch, objects, channels]")
    object_inputs.check_boxes("boxes", boxes)
    objects = ((0, 0, "batch"), (1, 1, "objects"))
    object_inputs.check_width("features", features, weights.query_kernel.shape[0],
                              "the relation weights")
    features, boxes = object_inputs.check_same_dims("features", features, "boxes", boxes,
                                                    objects)
    if values is None:
        values = features
    else:
        object_inputs.check_width("values", values, weights.value_kernel.shape[0],
                                  "the relation's value weights")
        features, values = object_inputs.check_same_dims("features", features, "values",
                                                         values, objects)
    if key_mask is not None:
        features, key_mask = object_inputs.check_object_mask("key_mask", key_mask, "features",
                                                             features)
    return features, boxes, key_mask, values


def _project(inputs, kernel, bias=None):
    # `dense` (a 2-D matmul), not tf.matmul of [B, 1, N, D] by [D, K]: TF 2.20's
    # oneDNN batch matmul returns garbage and corrupts the heap for that shape
    # (B > 1, a query chunk of one) on AVX-512 CPUs.
    return dense(inputs, kernel, bias)


def _attend(queries, query_boxes, keys, values, key_boxes, key_mask, weights, box_format,
            size_offset, geometry_dim):
    """Attention of a chunk of queries `[B, q, heads, d_k]` over all keys."""
    logits = tf.einsum("bqhd,bkhd->bhqk", at_least_float32(queries), at_least_float32(keys))
    logits /= math.sqrt(queries.shape[-1])
    if weights.geometry_kernel is not None:
        geometry = relative_geometry(tf.cast(query_boxes, logits.dtype),
                                     tf.cast(key_boxes, logits.dtype), box_format, size_offset)
        embedding = geometry_embedding(geometry, geometry_dim)
        geometric = tf.nn.relu(_project(embedding, weights.geometry_kernel,
                                        weights.geometry_bias))
        logits += tf.transpose(tf.math.log(tf.maximum(geometric, _MIN_GEOMETRIC_WEIGHT)),
                               [0, 3, 1, 2])
    keep = tf.expand_dims(tf.expand_dims(key_mask, 1), 1)
    attention = tf.nn.softmax(tf.where(keep, logits, _MASKED_LOGIT), axis=-1)
    attention *= tf.cast(keep, attention.dtype)  # an all-masked row sums to 0, not 1
    relation = tf.einsum("bhqk,bkhd->bqhd", tf.cast(attention, values.dtype), values)
    return relation, attention


def _by_query_chunks(attend, queries, boxes, chunk_size, return_attention):
    """Runs `attend` over chunks of queries and concatenates the results."""
    count = tf.shape(queries)[1]
    static_count = queries.shape[1]
    if (chunk_size is None or (static_count is not None and static_count <= chunk_size)
            or (portable_graphs_requested() and return_attention)):
        relation, attention = attend(queries, boxes)
        return relation, attention if return_attention else None
    if portable_graphs_requested():
        return _portable_chunks(attend, queries, boxes, chunk_size), None
    # At least one chunk: map_fn cannot stack an empty list of unknown shape (N = 0).
    chunks = tf.maximum((count + chunk_size - 1) // chunk_size, 1)
    padding = chunks * chunk_size - count

    def chunked(tensor):
        padded = tf.pad(tensor, [[0, 0], [0, padding]] + [[0, 0]] * (tensor.shape.rank - 2))
        shape = tf.concat([tf.shape(tensor)[:1], [chunks, chunk_size],
                           tf.shape(tensor)[2:]], 0)
        return tf.experimental.numpy.moveaxis(tf.reshape(padded, shape), 1, 0)

    def one_chunk(args):
        relation, attention = attend(*args)
        return (relation, attention) if return_attention else (relation,)

    signature = (tf.TensorSpec(None, queries.dtype),)
    if return_attention:
        signature += (tf.TensorSpec(None, compute_dtype(queries.dtype)),)
    outputs = tf.map_fn(one_chunk, (chunked(queries), chunked(boxes)),
                        fn_output_signature=signature, parallel_iterations=1)
    relation = _unchunked(outputs[0], 1, count)
    attention = _unchunked(outputs[1], 2, count) if return_attention else None
    return relation, attention


def _portable_chunks(attend, queries, boxes, chunk_size):
    """`_by_query_chunks` for exported graphs: a while loop that appends each
    chunk's relation to the first chunk's (TFLite's WHILE and ONNX's Loop;
    `map_fn`'s TensorList ops have no builtin lowering), so the runtimes hold
    one chunk's geometry at a time too."""
    count = tf.shape(queries)[1]
    chunks = (count + chunk_size - 1) // chunk_size

    def body(index, relation):
        start = index * chunk_size
        end = tf.minimum(start + chunk_size, count)
        part, _ = attend(queries[:, start:end], boxes[:, start:end])
        return index + 1, tf.concat([relation, part], axis=1)

    first, _ = attend(queries[:, :chunk_size], boxes[:, :chunk_size])
    rows = tf.TensorShape([None, None]).concatenate(first.shape[2:])
    _, relation = tf.while_loop(lambda index, _: index < chunks, body, [tf.constant(1), first],
                                shape_invariants=[tf.TensorShape([]), rows])
    return relation


def _unchunked(stacked, axis, count):
    """`[chunks, ..., chunk, ...]` (chunk at `axis + 1`) back to `count` rows at `axis`."""
    moved = tf.experimental.numpy.moveaxis(stacked, 0, axis)
    shape = tf.shape(moved)
    merged = tf.reshape(moved, tf.concat([shape[:axis], [-1], shape[axis + 2:]], 0))
    return tf.gather(merged, tf.range(count), axis=axis)
