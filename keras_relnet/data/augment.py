"""ImageNet image preprocessing: random-resized crop, centre crop, mixup, cutmix.

Every random choice is a stateless function of a seed, so a pipeline gives the
same images for the same example index in every run (and after a resume).
"""

import tensorflow as tf

from keras_relnet.applications.lrnet import preprocess_input

EVAL_CROP_FRACTION = 224 / 256  # resize 256 -> centre crop 224


def random_resized_crop(jpeg, seed, size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """Decodes a random crop of a JPEG and resizes it to `size` x `size`, flipped at random.

    The crop covers a `scale` fraction of the image area with aspect ratio in
    `ratio` (Inception-style); only the crop window is decoded.

    Args:
        jpeg: scalar string tensor, JPEG bytes.
        seed: int32/int64 tensor of shape [2], the stateless seed.
        size: output height and width.
        scale: range of the crop area, as a fraction of the image.
        ratio: range of the crop aspect ratio (width / height).

    Returns:
        float32 `[size, size, 3]` image in [0, 255].

    Example:
    >>> jpeg = tf.io.encode_jpeg(tf.zeros((40, 30, 3), tf.uint8))
    >>> random_resized_crop(jpeg, tf.constant([1, 2]), 16).shape
    TensorShape([16, 16, 3])
    """
    crop_seed, flip_seed = tf.unstack(
        tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2)
    )
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.io.extract_jpeg_shape(jpeg),
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=crop_seed,
        min_object_covered=0.0,
        aspect_ratio_range=ratio,
        area_range=scale,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    window = tf.stack([begin[0], begin[1], crop_size[0], crop_size[1]])
    image = tf.io.decode_and_crop_jpeg(jpeg, window, channels=3)
    image = tf.image.resize(image, [size, size], method="bilinear")
    return tf.image.stateless_random_flip_left_right(image, flip_seed)


def center_crop(jpeg, size, crop_fraction=EVAL_CROP_FRACTION):
    """Decodes the central crop of a JPEG and resizes it to `size` x `size`.

    The crop is the central square of `crop_fraction` times the shorter side:
    the same window as "resize the shorter side to size / crop_fraction, then
    crop size x size", decoded without the full image.

    Args:
        jpeg: scalar string tensor, JPEG bytes.
        size: output height and width.
        crop_fraction: side of the crop over the shorter image side.

    Returns:
        float32 `[size, size, 3]` image in [0, 255].

    Example:
    >>> jpeg = tf.io.encode_jpeg(tf.zeros((40, 30, 3), tf.uint8))
    >>> center_crop(jpeg, 16).shape
    TensorShape([16, 16, 3])
    """
    shape = tf.io.extract_jpeg_shape(jpeg)
    height, width = shape[0], shape[1]
    side = tf.cast(
        crop_fraction * tf.cast(tf.minimum(height, width), tf.float32), tf.int32
    )
    side = tf.maximum(side, 1)
    window = tf.stack([(height - side + 1) // 2, (width - side + 1) // 2, side, side])
    image = tf.io.decode_and_crop_jpeg(jpeg, window, channels=3)
    return tf.image.resize(image, [size, size], method="bilinear")


def normalize(image):
    """ImageNet mean/std normalisation of an RGB image in [0, 255] (the models' input).

    Args:
        image: float tensor, RGB in [0, 255].

    Returns:
        `(image / 255 - mean) / std`, the same as `applications.preprocess_input`.

    Example:
    >>> float(normalize(tf.fill((1, 1, 3), 255.0))[0, 0, 0])  # doctest: +ELLIPSIS
    2.24...
    """
    return preprocess_input(image)


def mix_batch(images, labels, seed, mixup_alpha=0.0, cutmix_alpha=0.0):
    """Mixup or cutmix of a batch with its reverse (one of the two, chosen at random).

    With both alphas positive, each batch uses mixup or cutmix with equal
    probability. Labels are mixed with the same weight as the pixels.

    Args:
        images: float `[B, H, W, C]`.
        labels: float one-hot (or soft) `[B, classes]`.
        seed: int tensor of shape [2], the stateless seed of this batch.
        mixup_alpha: Beta(alpha, alpha) parameter of mixup; 0 turns it off.
        cutmix_alpha: Beta(alpha, alpha) parameter of cutmix; 0 turns it off.

    Returns:
        `(images, labels)`, mixed.

    Example:
    >>> images = tf.ones((2, 4, 4, 3)); labels = tf.eye(2)
    >>> _, mixed = mix_batch(images, labels, tf.constant([0, 1]), mixup_alpha=0.2)
    >>> np.allclose(mixed.numpy().sum(axis=1), 1.0)
    True
    """
    if mixup_alpha < 0 or cutmix_alpha < 0:
        raise ValueError(
            "`mixup_alpha` and `cutmix_alpha` must be >= 0; received "
            f"{mixup_alpha} and {cutmix_alpha}."
        )
    if mixup_alpha == 0 and cutmix_alpha == 0:
        return images, labels
    choice_seed, mixup_seed, cutmix_seed = tf.unstack(
        tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3)
    )
    if mixup_alpha == 0:
        return _cutmix(images, labels, cutmix_seed, cutmix_alpha)
    if cutmix_alpha == 0:
        return _mixup(images, labels, mixup_seed, mixup_alpha)
    use_cutmix = tf.random.stateless_uniform([], choice_seed) < 0.5
    return tf.cond(
        use_cutmix,
        lambda: _cutmix(images, labels, cutmix_seed, cutmix_alpha),
        lambda: _mixup(images, labels, mixup_seed, mixup_alpha),
    )


def _beta(seed, alpha):
    first_seed, second_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    first = tf.random.stateless_gamma([], first_seed, alpha)
    second = tf.random.stateless_gamma([], second_seed, alpha)
    return first / (first + second)


def _mixup(images, labels, seed, alpha):
    weight = _beta(seed, alpha)
    return (
        weight * images + (1 - weight) * tf.reverse(images, [0]),
        weight * labels + (1 - weight) * tf.reverse(labels, [0]),
    )


def _cutmix(images, labels, seed, alpha):
    weight_seed, centre_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    weight = _beta(weight_seed, alpha)
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    centre = tf.random.stateless_uniform([2], centre_seed)
    cut = tf.sqrt(1.0 - weight)
    sizes = tf.cast(tf.stack([height, width]), tf.float32)
    low = tf.cast(tf.clip_by_value((centre - cut / 2) * sizes, 0, sizes), tf.int32)
    high = tf.cast(tf.clip_by_value((centre + cut / 2) * sizes, 0, sizes), tf.int32)
    rows = tf.range(height)[:, None]
    columns = tf.range(width)[None, :]
    inside = (rows >= low[0]) & (rows < high[0]) & (columns >= low[1]) & (columns < high[1])
    inside = tf.cast(inside, images.dtype)[None, :, :, None]
    mixed = images * (1 - inside) + tf.reverse(images, [0]) * inside
    kept = 1.0 - tf.reduce_mean(inside)  # the pasted box after clipping
    kept = tf.cast(kept, labels.dtype)
    return mixed, kept * labels + (1 - kept) * tf.reverse(labels, [0])


def rand_augment(num_ops=2, magnitude=9, seed=None):
    """RandAugment (Keras' layer) for RGB images in [0, 255].

    Args:
        num_ops: augmentations applied to each image.
        magnitude: strength on the paper's 0..10 scale.
        seed: optional seed of the layer.

    Returns:
        A `keras.layers.RandAugment` to apply to one image or a batch.

    Example:
    >>> rand_augment()(tf.zeros((8, 8, 3))).shape
    TensorShape([8, 8, 3])
    """
    import keras

    if not 0 <= magnitude <= 10:
        raise ValueError(f"`magnitude` must be in [0, 10]; received {magnitude}.")
    return keras.layers.RandAugment(
        value_range=(0, 255), num_ops=num_ops, factor=magnitude / 10, seed=seed
    )


def stateless_seed(seed, index):
    """The stateless seed `[seed, index]` of one example or batch.

    Args:
        seed: the pipeline's integer seed.
        index: int64 tensor, the example (or batch) index.

    Returns:
        int64 tensor of shape [2].
    """
    return tf.stack([tf.constant(seed, tf.int64), tf.cast(index, tf.int64)])

