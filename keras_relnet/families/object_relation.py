"""The object relation family (object relation module): options, weights and forward."""

import dataclasses
from typing import Any, Optional

import keras
import tensorflow as tf

from keras_relnet.families.options import FamilyOptions, initializer_field
from keras_relnet.ops import checks
from keras_relnet.ops.box_geometry import BOX_FORMATS
from keras_relnet.ops.object_relation import RelationWeights, object_relation

PAPER_INITIALIZER = {"class_name": "RandomNormal", "config": {"stddev": 0.01}}


@dataclasses.dataclass(frozen=True)
class ObjectRelationOptions(FamilyOptions):
    """Options of an object relation module (see `keras_relnet.layers.ObjectRelation`).

    `kernel_initializer` None means the paper's N(0, 0.01).

    Example:
    >>> ObjectRelationOptions(num_heads=4).key_width(32)
    32
    """

    num_heads: int = 16
    key_dim: Optional[int] = None
    geometry_dim: int = 64
    use_geometry: bool = True
    residual: bool = False
    box_format: str = "yxyx"
    size_offset: float = 0.0
    query_chunk_size: Optional[int] = 256
    kernel_initializer: Any = initializer_field(None)

    def __post_init__(self):
        if self.kernel_initializer is None:
            object.__setattr__(self, "kernel_initializer", PAPER_INITIALIZER)
        super().__post_init__()

    def normalised(self):
        geometry_dim = checks.check_positive_int("geometry_dim", self.geometry_dim)
        if geometry_dim % 8:
            raise ValueError(f"`geometry_dim` must be a multiple of 8 (4 coordinates x sines "
                             f"and cosines); received {geometry_dim}.")
        chunk = self.query_chunk_size
        return dict(
            num_heads=checks.check_positive_int("num_heads", self.num_heads),
            key_dim=None if self.key_dim is None else checks.check_positive_int("key_dim",
                                                                                self.key_dim),
            geometry_dim=geometry_dim,
            use_geometry=bool(self.use_geometry),
            residual=bool(self.residual),
            box_format=checks.check_choice("box_format", self.box_format, BOX_FORMATS),
            size_offset=checks.check_finite_number("size_offset", self.size_offset),
            query_chunk_size=None if chunk is None else checks.check_positive_int(
                "query_chunk_size", chunk),
        )

    def check_width(self, width, name="features"):
        """A `ValueError` unless `num_heads` divides the feature width.

        Args:
            width: the feature width.
            name: what sets the width (an input or an option), for the message.

        Returns:
            `width`.
        """
        if width % self.num_heads:
            raise ValueError(f"`num_heads` ({self.num_heads}) must divide the feature width of "
                             f"`{name}`; received width {width}.")
        return width

    def key_width(self, width):
        """`num_heads * key_dim` (key_dim None: `width / num_heads`)."""
        return self.num_heads * (self.key_dim or self.check_width(width) // self.num_heads)


def create_weights(add_weight, options, width, kernel_regularizer=None):
    """Creates the weights of an object relation module with `add_weight`.

    Args:
        add_weight: the layer's `add_weight` (Keras 3 or tf_keras).
        options: `ObjectRelationOptions`.
        width: the feature width D (a multiple of `num_heads`).
        kernel_regularizer: regulariser of the query, key, value and
            geometry kernels.

    Returns:
        A `RelationWeights` (geometry weights None without the geometric term).

    Example:
    >>> layer = keras.layers.Layer()
    >>> weights = create_weights(layer.add_weight, ObjectRelationOptions(num_heads=4), 16)
    >>> tuple(weights.geometry_kernel.shape)
    (64, 4)
    """
    options.check_width(width)
    key_width = options.key_width(width)
    kernel = lambda name, shape: add_weight(name=name, shape=shape,
                                            initializer=options.kernel_initializer,
                                            regularizer=kernel_regularizer)
    bias = lambda name, size: add_weight(name=name, shape=(size,), initializer="zeros")
    geometry = ()
    if options.use_geometry:
        geometry = (kernel("geometry_kernel", (options.geometry_dim, options.num_heads)),
                    bias("geometry_bias", options.num_heads))
    return RelationWeights(
        kernel("query_kernel", (width, key_width)), bias("query_bias", key_width),
        kernel("key_kernel", (width, key_width)), bias("key_bias", key_width),
        kernel("value_kernel", (width, width)), bias("output_bias", width), *geometry)


def forward(features, boxes, weights, options, key_mask=None, return_attention=False):
    """The relation features (or `ReLU(features + relation)` with `residual`).

    Args:
        features: `[batch, objects, D]` in the compute dtype.
        boxes: `[batch, objects, 4]`.
        weights: `RelationWeights`.
        options: `ObjectRelationOptions`.
        key_mask: optional `[batch, objects]` bool.
        return_attention: also return the attention `[batch, heads, N, N]`.

    Returns:
        `[batch, objects, D]`, and the attention with `return_attention`.
    """
    outputs = object_relation(
        features, boxes, RelationWeights(*weights), options.num_heads, key_mask=key_mask,
        box_format=options.box_format, size_offset=options.size_offset,
        geometry_dim=options.geometry_dim, query_chunk_size=options.query_chunk_size,
        return_attention=return_attention)
    relation, attention = outputs if return_attention else (outputs, None)
    if options.residual:
        relation = tf.nn.relu(features + relation)
    return (relation, attention) if return_attention else relation
