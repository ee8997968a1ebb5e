"""Keras 3 layers of keras-relnet."""

from keras_relnet.layers.global_context import GlobalContext
from keras_relnet.layers.local_relation import LocalRelation2D
from keras_relnet.layers.non_local import NonLocal2D
from keras_relnet.layers.simplified_non_local import SimplifiedNonLocal2D
from keras_relnet.layers.squeeze_excitation import SqueezeExcitation
from keras_relnet.layers.object_relation import ObjectRelation
from keras_relnet.layers.duplicate_removal import DuplicateRemoval
from keras_relnet.layers.relation_box_head import RelationBoxHead
from keras_relnet.layers.learnable_region_features import LearnableRegionFeatures
from keras_relnet.layers.spatial_relation import SpatialRelation
from keras_relnet.layers.temporal_relation import TemporalRelation
from keras_relnet.layers.pair_similarity import PairSimilarity
