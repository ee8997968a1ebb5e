"""ImageNet training input pipeline: images/s from JPEG shards, against a plain pipeline.

Writes ImageNet-like shards (random crops of scikit-image's bundled photos,
JPEG at ImageNet's typical 500 x 375), then measures in one run:

- plain: one file after another, parse + full JPEG decode + random crop +
  resize + flip, sequential `map`, `batch`, no prefetch (what a first attempt
  looks like);
- keras-relnet: `keras_relnet.data.ImageNet.train` (parallel interleave over
  shards, crop-window-only JPEG decode, parallel `map`, prefetch),
  deterministic (the default: exact resume) and not, and with `cache=True`.

Ratios are images/s over the plain pipeline's, measured in the same run.

Run: `make bench` or `.venv/bin/python benchmarks/input_pipeline.py [--quick]`.
"""

import argparse
import os
import pathlib
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from keras_relnet.data import ImageNet, write_image_shards  # noqa: E402
from keras_relnet.data.augment import normalize  # noqa: E402
from keras_relnet.data.shards import find_shards, parse_record  # noqa: E402

IMAGE_SHAPE = (375, 500)


def photo_like_images(count, seed=0):
    """`count` uint8 images of IMAGE_SHAPE: random crops of the bundled photos, resized."""
    import skimage.data

    from tests.sample_photos import BUNDLED_RGB_PHOTOS

    rng = np.random.default_rng(seed)
    photos = [getattr(skimage.data, name)() for name in BUNDLED_RGB_PHOTOS]
    images = []
    for index in range(count):
        photo = photos[index % len(photos)]
        height, width = photo.shape[0] // 2, photo.shape[1] // 2
        top, left = rng.integers(0, photo.shape[0] - height), rng.integers(0, photo.shape[1] - width)
        crop = photo[top:top + height, left:left + width].astype("float32")
        images.append(tf.cast(tf.image.resize(crop, IMAGE_SHAPE), tf.uint8).numpy())
    return images


def plain_pipeline(files, batch_size, image_size, num_classes):
    """The unoptimised baseline: same outputs, none of the tf.data performance features."""
    def example(record):
        jpeg, label = parse_record(record)
        image = tf.io.decode_jpeg(jpeg, channels=3)
        side = tf.minimum(tf.shape(image)[0], tf.shape(image)[1])
        size = tf.cast(tf.cast(side, tf.float32) * tf.random.uniform([], 0.3, 1.0), tf.int32)
        image = tf.image.random_crop(image, tf.stack([size, size, 3]))
        image = tf.image.random_flip_left_right(
            tf.image.resize(image, [image_size, image_size]))
        return normalize(image), tf.one_hot(label - 1, num_classes)

    return (tf.data.TFRecordDataset(files).repeat().shuffle(1000).map(example)
            .batch(batch_size, drop_remainder=True))


def images_per_second(dataset, batch_size, batches):
    """Images/s over `batches` batches, after two warm-up batches."""
    iterator = iter(dataset)
    for _ in range(2):
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch_size / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images and batches")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=224)
    args = parser.parse_args()
    count, batches = (256, 6) if args.quick else (1024, 24)

    directory = tempfile.mkdtemp(prefix="imagenet-bench-")
    images = photo_like_images(count)
    labels = np.arange(count) % 1000 + 1
    write_image_shards(directory, "train", images, labels, num_shards=8)
    megabytes = sum(os.path.getsize(path) for path in find_shards(directory, "train")) / 1e6
    print(f"{count} JPEGs {IMAGE_SHAPE[1]}x{IMAGE_SHAPE[0]} in 8 shards ({megabytes:.0f} MB), "
          f"batch {args.batch_size}, crops {args.image_size}, {os.cpu_count()} CPU cores")

    def data(**options):
        return ImageNet(directory, image_size=args.image_size, num_classes=1000,
                        shuffle_buffer=1000, train_examples=count, **options)

    pipelines = [
        ("plain (sequential map, full decode)",
         plain_pipeline(find_shards(directory, "train"), args.batch_size, args.image_size, 1000)),
        ("keras-relnet, deterministic", data().train(args.batch_size)),
        ("keras-relnet, deterministic=False", data(deterministic=False).train(args.batch_size)),
        ("keras-relnet, cache=True", data(cache=True).train(args.batch_size)),
    ]
    print(f"\n{'pipeline':40s} {'images/s':>10s} {'vs plain':>9s}")
    baseline = None
    for name, dataset in pipelines:
        rate = images_per_second(dataset, args.batch_size, batches)
        baseline = baseline or rate
        print(f"{name:40s} {rate:10.0f} {rate / baseline:8.2f}x")


if __name__ == "__main__":
    main()
