"""Tiny ImageNet-format shards of generated JPEGs: an easy 4-class colour task."""

import numpy as np

from keras_relnet.data import write_image_shards

CLASSES = 4
COLOURS = np.array([[220, 40, 40], [40, 220, 40], [40, 40, 220], [220, 220, 40]])


def colour_images(count, seed, size=(40, 48)):
    """`(uint8 images [count, H, W, 3], labels 0..3)`: each class a noisy colour."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, count)
    noise = rng.normal(0, 30, (count, *size, 3))
    images = np.clip(COLOURS[labels][:, None, None, :] + noise, 0, 255).astype("uint8")
    return images, labels


def write_colour_shards(directory, train=64, validation=24, train_shards=3, label_offset=1):
    """Writes `train-*` and `validation-*` shards; labels stored as `label + label_offset`.

    Returns:
        `(train_labels, validation_labels)`, 0-based.
    """
    images, labels = colour_images(train + validation, seed=0)
    write_image_shards(directory, "train", images[:train], labels[:train] + label_offset,
                       train_shards)
    write_image_shards(directory, "validation", images[train:], labels[train:] + label_offset)
    return labels[:train], labels[train:]
