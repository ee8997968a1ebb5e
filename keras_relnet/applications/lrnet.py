"""LR-Net: ResNet bottlenecks whose every spatial convolution is a local relation.

Hu et al., "Local Relation Networks for Image Recognition", ICCV 2019. The
stem is a 1x1 convolution followed by a 7x7 local relation layer with stride 2
(no spatial convolution anywhere: "convolution free"); each bottleneck is
1x1 conv -> k x k `LocalRelation2D` -> 1x1 conv, with BN + ReLU after each and
a projection shortcut where the shape changes.
"""

import math

import keras

from keras_relnet.applications.common import STAGE_DEPTHS, application, classifier_model
from keras_relnet.applications.context_plan import context_plan
from keras_relnet.applications.layer_kit import KERAS_KIT
from keras_relnet.ops import checks

STAGE_WIDTHS = (100, 200, 400, 800)
STAGE_OUTPUTS = (256, 512, 1024, 2048)
STEM_WIDTH = 64

_BN = dict(axis=-1, momentum=0.9, epsilon=1e-5)


def LRNet(
    stage_depths,
    stage_widths=STAGE_WIDTHS,
    stage_outputs=STAGE_OUTPUTS,
    stem_width=STEM_WIDTH,
    kernel_size=7,
    channels_per_group=8,
    width_multiplier=1.0,
    zero_init_residual=True,
    relation_options=None,
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
    name="lrnet",
):
    """Builds any LR-Net variant; `LRNet26/50/101` are one call of this.

    Args:
        stage_depths: bottleneck blocks in each of the four stages.
        stage_widths: width of the local relation layer in each stage; rounded
            up to a multiple of `channels_per_group`.
        stage_outputs: output channels of each stage's blocks.
        stem_width: channels of the stem.
        kernel_size: window of every local relation layer.
        channels_per_group: m of every local relation layer.
        width_multiplier: scales every width (e.g. 0.25 for small inputs).
        zero_init_residual: start the last BN of each block at gamma = 0, so
            every block begins as the identity.
        relation_options: extra `LocalRelation2D` arguments for every relation
            layer (e.g. `{"implementation": "xla"}`).
        context_block: None, "gc", "snl", "se" or "nl": global-context blocks
            placed as in ResNet (see `keras_relnet.applications.context_plan`).
        context_stages: stages with context blocks, ints 2..5 or "c2".."c5".
        context_ratio: bottleneck ratio of GC and SE blocks.
        include_top: whether to end with the pooled `classes`-way classifier.
        weights: None (random initialisation) or the path to a weights file
            saved by `model.save_weights` (nothing is ever downloaded).
        input_tensor: optional Keras tensor to use as the model input.
        input_shape: `(height, width, channels)`; defaults to (224, 224, 3)
            with the top and (None, None, 3) without it.
        pooling: without the top, None (4D features), "avg" or "max".
        classes: number of classes of the top.
        classifier_activation: activation of the top layer (None for logits).
        name: model name.

    Returns:
        A `keras.Model`.

    Example:
    >>> model = LRNet((1, 1, 1, 1), width_multiplier=0.25, input_shape=(32, 32, 3),
    ...               classes=10)
    >>> model.output_shape
    (None, 10)
    """
    return classifier_model(
        lambda image: lrnet_endpoints(
            image, KERAS_KIT, stage_depths, stage_widths, stage_outputs, stem_width,
            kernel_size, channels_per_group, width_multiplier, zero_init_residual,
            relation_options, context_block, context_stages, context_ratio),
        include_top, weights, input_tensor, input_shape, pooling, classes,
        classifier_activation, name)


def lrnet_endpoints(image, kit, stage_depths, stage_widths=STAGE_WIDTHS,
                    stage_outputs=STAGE_OUTPUTS, stem_width=STEM_WIDTH, kernel_size=7,
                    channels_per_group=8, width_multiplier=1.0, zero_init_residual=True,
                    relation_options=None, context_block=None, context_stages=None,
                    context_ratio=1 / 16):
    """The LR-Net feature maps of `image`, built with the layers of `kit`.

    Args:
        image: the input tensor (Keras 3 or tf_keras, matching `kit`).
        kit: a `LayerKit`.
        the rest: as in `LRNet`.

    Returns:
        `{level: features}` for levels 2..5 (strides 4..32).

    Example:
    >>> from keras_relnet.applications.layer_kit import KERAS_KIT
    >>> endpoints = lrnet_endpoints(keras.Input((32, 32, 3)), KERAS_KIT, (1, 1, 1, 1),
    ...                             width_multiplier=0.25)
    >>> {level: tuple(x.shape[1:]) for level, x in endpoints.items()}
    {2: (8, 8, 64), 3: (4, 4, 128), 4: (2, 2, 256), 5: (1, 1, 512)}
    """
    depths = tuple(checks.check_positive_int("stage_depths", d) for d in stage_depths)
    if len(depths) != len(stage_widths) or len(depths) != len(stage_outputs):
        raise ValueError(
            "`stage_depths`, `stage_widths` and `stage_outputs` must have the same "
            f"length; received {len(depths)}, {len(stage_widths)} and "
            f"{len(stage_outputs)}."
        )
    checks.check_positive_number("width_multiplier", width_multiplier)
    m = checks.check_positive_int("channels_per_group", channels_per_group)
    relation = dict(relation_options or {}, kernel_size=kernel_size,
                    channels_per_group=m)
    plan = context_plan(context_block, context_stages, context_ratio)

    grouped = lambda width: m * max(1, math.ceil(width * width_multiplier / m))
    x = kit.conv(grouped(stem_width), 1, use_bias=False, name="stem_conv")(image)
    x = kit.act("stem_conv_relu")(kit.norm("stem_conv_bn", **_BN)(x))
    x = kit.relation("local_relation", "stem_relation", strides=2, **relation)(x)
    x = kit.act("stem_relation_relu")(kit.norm("stem_relation_bn", **_BN)(x))
    x = kit.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)

    endpoints = {}
    for stage, (depth, width, outputs) in enumerate(
        zip(depths, stage_widths, stage_outputs)
    ):
        for block in range(depth):
            prefix = f"stage{stage + 2}_block{block + 1}"
            x = plan.before_block(x, stage + 2, block, depth, f"stage{stage + 2}_nonlocal", kit)
            x = _bottleneck(
                x,
                kit,
                width=grouped(width),
                outputs=max(1, round(outputs * width_multiplier)),
                strides=2 if stage > 0 and block == 0 else 1,
                relation=relation,
                zero_init_residual=zero_init_residual,
                context=plan.block_layer(stage + 2, f"{prefix}_context", kit),
                name=prefix,
            )
        endpoints[stage + 2] = x
    return endpoints


LRNet26 = application(LRNet, "LRNet26", "lrnet26",
                      "LR-Net-26 (14.7M parameters, 2.6G multiply-adds at 224 x 224).",
                      stage_depths=STAGE_DEPTHS[26])
LRNet50 = application(LRNet, "LRNet50", "lrnet50",
                      "LR-Net-50 (23.3M parameters, 4.3G multiply-adds at 224 x 224).",
                      stage_depths=STAGE_DEPTHS[50])
LRNet101 = application(LRNet, "LRNet101", "lrnet101",
                       "LR-Net-101: LR-Net-50 with 23 blocks in stage 4.",
                       stage_depths=STAGE_DEPTHS[101])


def preprocess_input(x, data_format=None):
    """Scales RGB images in [0, 255] to ImageNet-normalised inputs ("torch" mode).

    Args:
        x: images, float array or tensor, RGB in [0, 255].
        data_format: Keras image data format (default: the global one).

    Returns:
        `(x / 255 - mean) / std` with the ImageNet mean and std.

    Example:
    >>> preprocess_input(np.full((1, 1, 1, 3), 255.0)).round(2)
    array([[[[2.25, 2.43, 2.64]]]])
    """
    return keras.applications.imagenet_utils.preprocess_input(
        x, data_format=data_format, mode="torch"
    )


def _bottleneck(x, kit, width, outputs, strides, relation, zero_init_residual, context,
                name):
    shortcut = x
    if strides != 1 or x.shape[-1] != outputs:
        shortcut = kit.conv(outputs, 1, strides=strides, use_bias=False,
                            name=f"{name}_0_conv")(x)
        shortcut = kit.norm(f"{name}_0_bn", **_BN)(shortcut)
    x = kit.conv(width, 1, use_bias=False, name=f"{name}_1_conv")(x)
    x = kit.act(f"{name}_1_relu")(kit.norm(f"{name}_1_bn", **_BN)(x))
    x = kit.relation("local_relation", f"{name}_2_relation", strides=strides, **relation)(x)
    x = kit.act(f"{name}_2_relu")(kit.norm(f"{name}_2_bn", **_BN)(x))
    x = kit.conv(outputs, 1, use_bias=False, name=f"{name}_3_conv")(x)
    x = kit.norm(f"{name}_3_bn", **_BN,
                 gamma_initializer="zeros" if zero_init_residual else "ones")(x)
    if context is not None:
        x = context(x)
    x = kit.layers.Add(name=f"{name}_add")([shortcut, x])
    return kit.act(f"{name}_out")(x)
