"""Pictures of what relation layers attend to."""

from keras_relnet.visualize.context_attention import (
    context_attention,
    plot_attention,
)
