"""ResNet-26/50/101 (Keras' architecture and layer names) with context blocks.

The same network as `keras.applications.ResNet50` (stride on the first 1x1 of
each downsampling block, biased convolutions, BN epsilon 1.001e-5), so its
weights transfer layer by layer, plus optional global-context blocks:
GC (GCNet 2019), simplified non-local, squeeze-excitation or non-local.
"""


from keras_relnet.applications.common import STAGE_DEPTHS, application, classifier_model
from keras_relnet.applications.context_plan import context_plan
from keras_relnet.applications.imagenet_weights import (
    check_imagenet_request,
    load_imagenet_weights,
)
from keras_relnet.applications.layer_kit import KERAS_KIT
from keras_relnet.ops import checks

STAGE_FILTERS = (64, 128, 256, 512)
_BN_EPSILON = 1.001e-5


def ResNet(
    stage_depths,
    context_block=None,
    context_stages=None,
    context_ratio=1 / 16,
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    name="resnet",
):
    """Builds a bottleneck ResNet, optionally with context blocks.

    Args:
        stage_depths: bottleneck blocks in each of the four stages.
        context_block: None, "gc", "snl", "se" or "nl" (see
            `keras_relnet.applications.context_plan`).
        context_stages: stages with context blocks, ints 2..5 or "c2".."c5"
            (None: gc/snl c3-c5, se c2-c5, nl c4).
        context_ratio: bottleneck ratio of GC and SE blocks (1/16 = r16).
        include_top, weights, input_tensor, input_shape, pooling, classes,
            classifier_activation: as in `keras.applications.ResNet50`;
            `weights` is None, a path to a weights file, or "imagenet" for
            the depths of ResNet-50/101: Keras' ImageNet weights, downloaded
            and cached by Keras, context blocks at their (identity)
            initialisation (see `imagenet_weights`).
        name: model name.

    Returns:
        A `keras.Model`.

    Example:
    >>> model = ResNet((1, 1, 1, 1), context_block="gc", input_shape=(64, 64, 3),
    ...                classes=10)
    >>> model.output_shape
    (None, 10)
    """
    imagenet_loader = None
    if weights == "imagenet":
        check_imagenet_request(stage_depths, include_top, classes)
        imagenet_loader = lambda model: load_imagenet_weights(model, stage_depths, include_top)
    return classifier_model(
        lambda image: resnet_endpoints(image, KERAS_KIT, stage_depths, context_block,
                                       context_stages, context_ratio),
        include_top, weights, input_tensor, input_shape, pooling, classes,
        classifier_activation, name, imagenet_loader)


def resnet_endpoints(image, kit, stage_depths, context_block=None, context_stages=None,
                     context_ratio=1 / 16):
    """The ResNet feature maps of `image`, built with the layers of `kit`.

    Args:
        image: the input tensor (Keras 3 or tf_keras, matching `kit`).
        kit: a `LayerKit`.
        stage_depths, context_block, context_stages, context_ratio: as in `ResNet`.

    Returns:
        `{level: features}` for levels 2..5 (strides 4..32).

    Example:
    >>> from keras_relnet.applications.layer_kit import KERAS_KIT
    >>> endpoints = resnet_endpoints(keras.Input((64, 64, 3)), KERAS_KIT, (1, 1, 1, 1))
    >>> {level: tuple(x.shape[1:]) for level, x in endpoints.items()}
    {2: (16, 16, 256), 3: (8, 8, 512), 4: (4, 4, 1024), 5: (2, 2, 2048)}
    """
    depths = tuple(checks.check_positive_int("stage_depths", d) for d in stage_depths)
    if len(depths) != len(STAGE_FILTERS):
        raise ValueError(
            f"`stage_depths` must have {len(STAGE_FILTERS)} entries; received {depths}."
        )
    plan = context_plan(context_block, context_stages, context_ratio)
    x = kit.layers.ZeroPadding2D(3, name="conv1_pad")(image)
    x = kit.conv(64, 7, strides=2, name="conv1_conv")(x)
    x = kit.act("conv1_relu")(kit.norm("conv1_bn", epsilon=_BN_EPSILON)(x))
    x = kit.layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = kit.layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    endpoints = {}
    for index, (depth, filters) in enumerate(zip(depths, STAGE_FILTERS)):
        stage = index + 2
        for block in range(depth):
            prefix = f"conv{stage}_block{block + 1}"
            x = plan.before_block(x, stage, block, depth, f"conv{stage}_nonlocal", kit)
            x = _bottleneck(
                x, kit, filters,
                strides=2 if block == 0 and stage > 2 else 1,
                projection=block == 0,
                context=plan.block_layer(stage, f"{prefix}_context", kit),
                name=prefix,
            )
        endpoints[stage] = x
    return endpoints


def _bottleneck(x, kit, filters, strides, projection, context, name):
    bn = lambda suffix: kit.norm(f"{name}_{suffix}_bn", epsilon=_BN_EPSILON)
    if projection:
        shortcut = kit.conv(4 * filters, 1, strides=strides, name=f"{name}_0_conv")(x)
        shortcut = bn(0)(shortcut)
    else:
        shortcut = x
    x = kit.conv(filters, 1, strides=strides, name=f"{name}_1_conv")(x)
    x = kit.act(f"{name}_1_relu")(bn(1)(x))
    x = kit.conv(filters, 3, padding="same", name=f"{name}_2_conv")(x)
    x = kit.act(f"{name}_2_relu")(bn(2)(x))
    x = kit.conv(4 * filters, 1, name=f"{name}_3_conv")(x)
    x = bn(3)(x)
    if context is not None:
        x = context(x)
    x = kit.layers.Add(name=f"{name}_add")([shortcut, x])
    return kit.act(f"{name}_out")(x)


ResNet26 = application(ResNet, "ResNet26", "resnet26", "ResNet-26 (16.0M parameters).",
                       stage_depths=STAGE_DEPTHS[26])
ResNet50 = application(ResNet, "ResNet50", "resnet50",
                       "ResNet-50, the architecture of `keras.applications.ResNet50`.",
                       stage_depths=STAGE_DEPTHS[50])
ResNet101 = application(ResNet, "ResNet101", "resnet101", "ResNet-101.",
                        stage_depths=STAGE_DEPTHS[101])
GCResNet50 = application(ResNet, "GCResNet50", "gc_resnet50",
                         "GC-ResNet-50: GC blocks (r16) in every bottleneck of c3-c5.",
                         stage_depths=STAGE_DEPTHS[50], context_block="gc",
                         context_ratio=1 / 16)
SEResNet50 = application(ResNet, "SEResNet50", "se_resnet50",
                         "SE-ResNet-50: SE blocks (r16) in every bottleneck of c2-c5.",
                         stage_depths=STAGE_DEPTHS[50], context_block="se",
                         context_ratio=1 / 16)
NLResNet50 = application(ResNet, "NLResNet50", "nl_resnet50",
                         "NL-ResNet-50: one non-local block before the last block of c4.",
                         stage_depths=STAGE_DEPTHS[50], context_block="nl")
