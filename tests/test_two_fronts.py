"""Every layer with a Keras 3 and a tf_keras front passes the two-front contract:
same weights -> same outputs, gradients and regularisation losses; config
round trip; mixed precision (see `front_contract.py`)."""

import numpy as np
import pytest

from front_contract import FrontCase, run_front_contract
from keras_relnet import layers as keras3_layers
from keras_relnet.garden import layers as garden_layers

RNG = np.random.default_rng(0)
IMAGES = (RNG.normal(size=(2, 9, 9, 16)).astype("float32"),)


def _boxes(shape, low=0.0, high=100.0):
    corners = RNG.uniform(low, high, shape + (2, 2))
    return np.concatenate([corners.min(-2), corners.max(-2) + 3], -1).astype("float32")


def _mask(shape, padding):
    mask = np.ones(shape, bool)
    mask[-1, -padding:] = False
    return mask


def image_case(name, **options):
    return FrontCase(getattr(keras3_layers, name), getattr(garden_layers, name), options, IMAGES)


OBJECTS = (RNG.normal(size=(2, 6, 16)).astype("float32"), _boxes((2, 6)), _mask((2, 6), 2))
ROIS = (RNG.normal(size=(2, 6, 3, 3, 4)).astype("float32"), _boxes((2, 6)), _mask((2, 6), 2))
CANDIDATES = (RNG.uniform(size=(2, 7, 3)).astype("float32"), _boxes((2, 7, 3)),
              RNG.normal(size=(2, 7, 8)).astype("float32"), _mask((2, 7), 3))

CASES = {
    "local_relation": image_case("LocalRelation2D", kernel_size=3, channels_per_group=4,
                                 strides=2),
    "local_relation_no_value": image_case("LocalRelation2D", kernel_size=5,
                                          channels_per_group=8, value_projection=False,
                                          composability="dot"),
    "global_context": image_case("GlobalContext", ratio=1 / 4, fusion=("add", "multiply")),
    "global_context_average": image_case("GlobalContext", ratio=1 / 4, pooling="average"),
    "simplified_non_local": image_case("SimplifiedNonLocal2D"),
    "squeeze_excitation": image_case("SqueezeExcitation", ratio=1 / 4),
    "non_local": image_case("NonLocal2D", mode="embedded_gaussian", sub_sample=True),
    "non_local_concatenation": image_case("NonLocal2D", mode="concatenation"),
    "object_relation": FrontCase(
        keras3_layers.ObjectRelation, garden_layers.ObjectRelation, dict(num_heads=4), OBJECTS,
        garden_call=lambda layer, features, boxes, mask: layer(features, boxes=boxes,
                                                               key_mask=mask)),
    "box_head": FrontCase(
        keras3_layers.RelationBoxHead, garden_layers.RelationDetectionHead,
        dict(num_classes=3, fc_dim=16, num_heads=4), ROIS,
        garden_options=dict(num_classes=3, fc_dims=16, num_relation_heads=4),
        garden_call=lambda layer, features, rois, mask: layer(features, rois=rois,
                                                              roi_mask=mask)),
    "duplicate_removal": FrontCase(
        keras3_layers.DuplicateRemoval, garden_layers.DuplicateRemoval,
        dict(top_k=5, embedding_dim=16, rank_dim=32, num_heads=2, key_dim=4), CANDIDATES,
        garden_call=lambda layer, scores, boxes, features, mask: layer(
            features, scores=scores, boxes=boxes, roi_mask=mask),
        differentiable=(0, 2), mixed_output=None),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_both_fronts_are_one_computation(name):
    run_front_contract(CASES[name])


def test_every_layer_with_a_garden_front_has_a_case():
    fronts = {case.garden.__name__ for case in CASES.values()}
    garden_classes = {name for name in dir(garden_layers)
                      if isinstance(getattr(garden_layers, name), type)
                      and not name.startswith("_")
                      and issubclass(getattr(garden_layers, name), garden_layers._FamilyLayer)}
    assert garden_classes == fronts
