"""Pictures of what relation layers attend to."""

from keras_relnet.visualize.context_attention import (
    context_attention,
    plot_attention,
)
from keras_relnet.visualize.object_relations import plot_relations, strongest_relations
from keras_relnet.visualize.tracks import plot_similarity, plot_tracks
