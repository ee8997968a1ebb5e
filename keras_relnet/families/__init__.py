"""One definition per relation family, read by both front ends.

Each module holds, for one family:

- its options: a frozen, typed dataclass, validated once when it is made;
- its weights: `create_weights(add_weight, options, ...)`, which takes the
  front's `add_weight` (Keras 3 or tf_keras) and the regulariser;
- its forward: `forward(inputs, weights, options, ...)`, a call of the ops.

The Keras 3 layers (`keras_relnet.layers`) and the tf_keras layers of Model
Garden (`keras_relnet.garden.layers`) are thin fronts over these three, so
the two cannot drift apart. The layout is described in `docs/design.md`.
"""
