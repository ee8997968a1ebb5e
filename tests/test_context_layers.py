"""GlobalContext, SimplifiedNonLocal2D, NonLocal2D, SqueezeExcitation: the NumPy
spec, the identities the spec names, argument errors and the Keras contract."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_relnet.layers import GlobalContext, NonLocal2D, SimplifiedNonLocal2D, SqueezeExcitation
from keras_relnet.ops.context import NON_LOCAL_MODES
import layer_contract as contract
from numpy_context import numpy_global_context, numpy_non_local, numpy_squeeze_excitation

FUSIONS = [("add",), ("multiply",), ("add", "multiply"), ("multiply", "add")]


def randomised(layer, shape, seed=0):
    layer.build(shape)
    contract.randomise_weights(layer, seed)
    return layer


def numpy_of(weights):
    return tuple(None if w is None else np.asarray(w, np.float64) for w in weights)


@pytest.mark.parametrize("pooling", ["attention", "average"])
@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("transform", ["bottleneck", "linear"])
def test_global_context_matches_numpy_spec(pooling, fusion, transform):
    inputs = np.random.default_rng(1).normal(size=(2, 5, 6, 16)).astype("float32")
    layer = randomised(GlobalContext(ratio=1 / 4, pooling=pooling, fusion=fusion,
                                     transform=transform), inputs.shape)
    want = numpy_global_context(
        inputs, numpy_of(layer.family_weights.pooling),
        {kind: numpy_of(weights) for kind, weights in layer.family_weights.transforms.items()},
        pooling, transform)
    np.testing.assert_allclose(layer(inputs).numpy(), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", NON_LOCAL_MODES)
@pytest.mark.parametrize("sub_sample", [False, True])
@pytest.mark.parametrize("use_scale", [True, False])
def test_non_local_matches_numpy_spec(mode, sub_sample, use_scale):
    inputs = np.random.default_rng(2).normal(size=(2, 5, 6, 8)).astype("float32")
    layer = randomised(NonLocal2D(mode=mode, sub_sample=sub_sample, use_scale=use_scale),
                       inputs.shape)
    concat_kernel = layer.family_weights.concat_kernel
    concat = None if concat_kernel is None else concat_kernel.numpy()
    want = numpy_non_local(
        inputs, *[None if w is None else numpy_of(w) for w in (
            layer.family_weights[:4])],
        mode=mode, sub_sample=sub_sample, use_scale=use_scale, concat=concat)
    np.testing.assert_allclose(layer(inputs).numpy(), want, atol=1e-5, rtol=1e-5)


def test_squeeze_excitation_matches_numpy_spec():
    inputs = np.random.default_rng(3).normal(size=(2, 4, 5, 32)).astype("float32")
    layer = randomised(SqueezeExcitation(ratio=1 / 8), inputs.shape)
    want = numpy_squeeze_excitation(inputs, *numpy_of(layer.weights))
    np.testing.assert_allclose(layer(inputs).numpy(), want, atol=1e-5, rtol=1e-5)


def test_simplified_non_local_is_global_context_with_linear_transform():
    inputs = np.random.default_rng(4).normal(size=(2, 5, 5, 8)).astype("float32")
    snl = randomised(SimplifiedNonLocal2D(), inputs.shape)
    gc = GlobalContext(transform="linear")
    gc.build(inputs.shape)
    gc.set_weights(snl.get_weights())
    np.testing.assert_array_equal(snl(inputs).numpy(), gc(inputs).numpy())
    with pytest.raises(ValueError, match="SimplifiedNonLocal2D fixes .*received \\['ratio'\\]"):
        SimplifiedNonLocal2D(ratio=0.5)


@pytest.mark.parametrize("layer", [GlobalContext(), GlobalContext(fusion=("add", "multiply")),
                                   SimplifiedNonLocal2D(), NonLocal2D(),
                                   NonLocal2D(mode="concatenation", sub_sample=True)],
                         ids=["gc", "gc-add-multiply", "snl", "nl", "nl-concat"])
def test_add_fusion_blocks_are_exact_identities_at_initialisation(layer):
    inputs = np.random.default_rng(5).normal(size=(2, 6, 6, 32)).astype("float32")
    want = inputs * 0.5 if "multiply" in getattr(layer, "fusion", ()) else inputs
    np.testing.assert_array_equal(layer(inputs).numpy(), want)


def test_multiply_fusion_alone_halves_the_input_at_initialisation():
    inputs = np.random.default_rng(6).normal(size=(1, 4, 4, 32)).astype("float32")
    np.testing.assert_array_equal(GlobalContext(fusion="multiply")(inputs).numpy(), inputs * 0.5)


def test_embedded_gaussian_with_zero_theta_kernel_equals_a_simplified_non_local():
    # theta = b_theta (no kernel) makes the logits b_theta . phi_j / sqrt(C'), the same
    # for every query: attention pooling with kernel W_phi b_theta / sqrt(C'), followed by
    # the linear transform W_g W_z, bias b_g W_z + b_z.
    inputs = np.random.default_rng(7).normal(size=(2, 5, 6, 8)).astype("float32")
    nl = randomised(NonLocal2D(), inputs.shape, seed=8)
    theta = nl.family_weights.theta
    theta[0].assign(tf.zeros_like(theta[0]))
    (_, theta_bias), (phi_kernel, _), (g_kernel, g_bias), (out_kernel, out_bias) = [
        [w.numpy() for w in pair] for pair in nl.family_weights[:4]]
    snl = SimplifiedNonLocal2D()
    snl.build(inputs.shape)
    snl.set_weights([phi_kernel @ theta_bias[:, None] / np.sqrt(len(theta_bias)), np.zeros(1),
                     g_kernel @ out_kernel, g_bias @ out_kernel + out_bias])
    np.testing.assert_allclose(nl(inputs).numpy(), snl(inputs).numpy(), atol=1e-5)


def test_attention_scores_are_returned_and_normalised():
    inputs = np.random.default_rng(9).normal(size=(2, 4, 5, 8)).astype("float32")
    _, pooling = randomised(GlobalContext(1 / 4), inputs.shape)(inputs, return_attention_scores=True)
    assert pooling.shape == (2, 4, 5)
    np.testing.assert_allclose(tf.reduce_sum(pooling, [1, 2]).numpy(), [1, 1], rtol=1e-5)
    _, pairwise = NonLocal2D()(inputs, return_attention_scores=True)
    assert pairwise.shape == (2, 20, 20)
    np.testing.assert_allclose(tf.reduce_sum(pairwise, -1).numpy(), np.ones((2, 20)), rtol=1e-5)


@pytest.mark.parametrize("make, message", [
    (lambda: GlobalContext(ratio=0), "`ratio` must be a positive number; received 0"),
    (lambda: GlobalContext(ratio=-0.5), "`ratio` must be a positive number; received -0.5"),
    (lambda: GlobalContext(ratio=1 / 64).build((1, 4, 4, 16)), r"`ratio` .* 0 < 1 channels"),
    (lambda: GlobalContext(pooling="max"), "`pooling` must be one of .*received 'max'"),
    (lambda: GlobalContext(fusion=()), "`fusion` must be a non-empty sequence"),
    (lambda: GlobalContext(fusion=("add", "add")), "`fusion` must be a non-empty sequence"),
    (lambda: GlobalContext(fusion=("concat",)), "`fusion` must be one of .*received 'concat'"),
    (lambda: GlobalContext(transform="mlp"), "`transform` must be one of .*received 'mlp'"),
    (lambda: NonLocal2D(mode="cosine"), "`mode` must be one of .*received 'cosine'"),
    (lambda: NonLocal2D(reduction=0), "`reduction` must be a positive integer"),
    (lambda: SqueezeExcitation(ratio=0), "`ratio` must be a positive number"),
    (lambda: SqueezeExcitation(ratio=1 / 32).build((1, 4, 4, 16)), r"`ratio` .* 0 < 1 hidden"),
    (lambda: GlobalContext().build((1, 4, 16)), "`inputs` must be a rank-4 tensor"),
])
def test_bad_arguments_raise_value_error(make, message):
    with pytest.raises(ValueError, match=message):
        make()


LAYERS = {
    "gc": lambda: GlobalContext(ratio=1 / 4, fusion=("add", "multiply")),
    "gc-average": lambda: GlobalContext(ratio=1 / 4, pooling="average"),
    "snl": SimplifiedNonLocal2D,
    "nl": lambda: NonLocal2D(sub_sample=True),
    "nl-concat": lambda: NonLocal2D(mode="concatenation"),
    "se": lambda: SqueezeExcitation(ratio=1 / 4),
}


@pytest.mark.parametrize("name", LAYERS)
def test_keras_contract(name, tmp_path):
    make = LAYERS[name]
    contract.assert_keras_round_trip(make, (2, 6, 5, 8), tmp_path / "layer.keras")
    contract.assert_unknown_spatial_dims_under_tf_function(make, 8)


@pytest.mark.parametrize("name", LAYERS)
def test_gradients_match_finite_differences(name):
    config = LAYERS[name]().get_config()
    config["dtype"] = "float64"
    layer = type(LAYERS[name]()).from_config(config)
    contract.assert_gradients_match_finite_differences(layer, (2, 4, 4, 8), seed=3)


@pytest.mark.parametrize("name", ["gc", "nl", "se"])
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(name, policy):
    contract.assert_mixed_precision_close_to_float32(LAYERS[name], (2, 6, 6, 16), policy)


def test_mirrored_strategy_matches_one_device():
    def stack():
        return keras.Sequential([GlobalContext(ratio=1 / 4), NonLocal2D(), SqueezeExcitation(1 / 4)])
    contract.assert_mirrored_matches_one_device(stack, (8, 5, 5, 8))


@pytest.mark.parametrize("size", [(1, 1), (1, 6), (5, 1)])
def test_non_local_sub_sampling_keeps_size_one_axes(size):
    x = np.random.default_rng(11).normal(size=(2, *size, 8)).astype("float32")
    layer = NonLocal2D(sub_sample=True)
    outputs, weights = layer(x, return_attention_scores=True)
    keys = max(size[0] // 2, 1) * max(size[1] // 2, 1)
    assert outputs.shape == x.shape and weights.shape == (2, size[0] * size[1], keys)
    assert np.isfinite(outputs.numpy()).all()
    np.testing.assert_allclose(weights.numpy().sum(-1), 1.0, rtol=1e-5)
