"""ImageNet-format TFRecord shards: finding, counting, writing and checking them.

A shard holds `tf.train.Example` records with `image/encoded` (JPEG bytes) and
`image/class/label` (int64), the format of the TPU ImageNet conversion script
and of TF Model Garden's classification reader.
"""

import functools
import glob
import os

import numpy as np
import tensorflow as tf

IMAGE_KEY = "image/encoded"
LABEL_KEY = "image/class/label"
SPLITS = ("train", "validation")
# How each on-disk layout names its files and features. "tfds" is a prepared
# TFDS `imagenet2012` directory: TFRecords of tf.train.Example with features
# "image" (JPEG) and "label" (0..999), readable without TFDS installed.
LAYOUTS = {
    "tfrecord": {
        "patterns": {
            "train": ("train-*", "train*"),
            "validation": ("validation-*", "valid*", "val-*"),
        },
        "image_key": IMAGE_KEY,
        "label_key": LABEL_KEY,
        "label_offset": 1,
    },
    "tfds": {
        "patterns": {
            split: (f"imagenet2012-{split}.tfrecord-*",
                    f"imagenet2012/*/imagenet2012-{split}.tfrecord-*")
            for split in SPLITS
        },
        "image_key": "image",
        "label_key": "label",
        "label_offset": 0,
    },
}
LABEL_ERROR = "keras-relnet label out of range"  # marks our assertion
KNOWN_SPLIT_SIZES = {("train", 1024): 1_281_167, ("validation", 128): 50_000}


class ShardError(ValueError):
    """A data directory, shard or record that cannot be read as ImageNet data."""


def _holds_class_folders(data_dir):
    """Whether a sub-folder of `data_dir` holds image files (a <class>/ root)."""
    from keras_relnet.data.folders import IMAGE_SUFFIXES  # folders imports this module

    for name in tf.io.gfile.listdir(data_dir):
        folder = os.path.join(data_dir, name)
        if tf.io.gfile.isdir(folder) and any(
                file.lower().endswith(IMAGE_SUFFIXES) for file in tf.io.gfile.listdir(folder)):
            return True
    return False


def find_shards(data_dir, split, layout="tfrecord"):
    """The sorted shard files of `split` in `data_dir`.

    Args:
        data_dir: directory holding the shards.
        split: "train" or "validation".
        layout: "tfrecord" (files `train-*`, `validation-*`, `valid*` or
            `val-*`) or "tfds" (a prepared TFDS directory holding
            `imagenet2012/<version>/imagenet2012-<split>.tfrecord-*`; the
            newest version is used).

    Returns:
        A list of file paths, sorted.

    Raises:
        ShardError: `data_dir` is missing or holds no shard of `split`.

    Example:
    >>> find_shards("/no/such/dir", "train")
    Traceback (most recent call last):
    ...
    keras_relnet.data.shards.ShardError: `data_dir` /no/such/dir does not exist ...
    """
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}; received {split!r}.")
    if layout not in LAYOUTS:
        raise ValueError(f"`layout` must be one of {sorted(LAYOUTS)}; received {layout!r}.")
    patterns = LAYOUTS[layout]["patterns"][split]
    data_dir = os.fspath(data_dir)
    if not tf.io.gfile.isdir(data_dir):
        raise ShardError(
            f"`data_dir` {data_dir} does not exist or is not a directory; expected "
            "a directory of ImageNet TFRecord shards (train-*, validation-*)."
        )
    for pattern in patterns:
        files = [path for path in tf.io.gfile.glob(os.path.join(glob.escape(data_dir), pattern))
                 if not tf.io.gfile.isdir(path)]
        if files:
            newest = max(os.path.dirname(path) for path in files)
            return sorted(path for path in files if os.path.dirname(path) == newest)
    if any(tf.io.gfile.isdir(os.path.join(data_dir, name)) for name in ("train", "val")) or \
            _holds_class_folders(data_dir):
        raise ShardError(
            f"`data_dir` {data_dir} holds image folders (train/<class>/... or <class>/...), "
            "not TFRecord "
            "shards: convert them once with `keras-relnet prepare-imagenet --source "
            f"{data_dir} --output SHARD_DIR` and pass SHARD_DIR as the data directory."
        )
    raise ShardError(
        f"`data_dir` {data_dir} holds no {split} shards: no file matches "
        f"{' or '.join(patterns)}."
    )


def count_records(files, split=None):
    """The number of records in `files` (read once, in parallel).

    The standard 1024-shard train and 128-shard validation splits of ImageNet
    are not read: their sizes are known.

    Args:
        files: shard paths.
        split: "train" or "validation" when `files` may be a standard split.

    Returns:
        The record count, an int.

    Example:
    >>> count_records([]) == 0
    True
    """
    known = KNOWN_SPLIT_SIZES.get((split, len(files)))
    if known is not None and all(f"-of-{len(files):05d}" in f for f in files):
        return known
    return _read_count(tuple((path, tf.io.gfile.stat(path).length) for path in files))


@functools.lru_cache(maxsize=16)  # a pipeline asks for its size several times
def _read_count(files_and_sizes):
    files = [path for path, _ in files_and_sizes]
    if not files:
        return 0
    records = tf.data.TFRecordDataset(files, num_parallel_reads=tf.data.AUTOTUNE)
    try:
        return int(records.reduce(np.int64(0), lambda count, _: count + 1))
    except tf.errors.OpError as error:
        raise (locate_bad_record(files) or error) from None


def write_image_shards(directory, split, images, labels, num_shards=1):
    """Writes images and labels as ImageNet-format shards (JPEG, int64 label).

    For tests, benchmarks and small custom datasets.

    Args:
        directory: output directory (created).
        split: file prefix, e.g. "train" or "validation".
        images: uint8 array `[N, H, W, 3]` or a list of such images.
        labels: N integer labels, written as given.
        num_shards: number of files, named `{split}-00000-of-0000{num_shards}`.

    Returns:
        The written file paths.

    Example:
    >>> import tempfile
    >>> images = np.zeros((4, 8, 8, 3), "uint8")
    >>> len(write_image_shards(tempfile.mkdtemp(), "train", images, [1, 2, 3, 4], 2))
    2
    """
    if len(images) != len(labels):
        raise ValueError(
            f"`images` and `labels` must have the same length; received "
            f"{len(images)} and {len(labels)}."
        )
    tf.io.gfile.makedirs(os.fspath(directory))
    paths = [
        os.path.join(directory, f"{split}-{index:05d}-of-{num_shards:05d}")
        for index in range(num_shards)
    ]
    for index, path in enumerate(paths):
        with tf.io.TFRecordWriter(path) as writer:
            for image, label in list(zip(images, labels))[index::num_shards]:
                writer.write(image_example(tf.io.encode_jpeg(image).numpy(), label))
    return paths


def image_example(jpeg_bytes, label):
    """One serialised `tf.train.Example` with `image/encoded` and `image/class/label`.

    Args:
        jpeg_bytes: the encoded image.
        label: integer class label.

    Returns:
        The serialised record, bytes.

    Example:
    >>> len(image_example(b"jpeg", 3)) > 0
    True
    """
    feature = {
        IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[jpeg_bytes])),
        LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def parse_record(record, image_key=IMAGE_KEY, label_key=LABEL_KEY):
    """The JPEG bytes and int64 label of one serialised record.

    Args:
        record: scalar string tensor.
        image_key: feature holding the JPEG bytes.
        label_key: feature holding the label.

    Returns:
        `(jpeg_bytes, label)`; a missing label reads as -1.

    Example:
    >>> jpeg, label = parse_record(image_example(b"jpeg", 3))
    >>> int(label)
    3
    """
    features = tf.io.parse_single_example(record, {
        image_key: tf.io.FixedLenFeature([], tf.string),
        label_key: tf.io.FixedLenFeature([], tf.int64, default_value=-1),
    })
    return features[image_key], features[label_key]


def checked_label(label, label_offset, num_classes, source, index):
    """`label - label_offset`, asserted to lie in `[0, num_classes)`.

    Args:
        label: int64 label as stored.
        label_offset: 1 for TPU-style labels 1..1000, 0 for 0..999.
        num_classes: number of classes of the model.
        source: the shard path, string tensor (named by the error).
        index: the record's position in the shard (named by the error).

    Returns:
        The int32 class index.
    """
    label = label - label_offset
    in_range = tf.logical_and(label >= 0, label < num_classes)
    with tf.control_dependencies([tf.debugging.Assert(in_range, [
        f"{LABEL_ERROR}: label", label + label_offset, "of record", index, "in", source,
        f"is not in {label_offset}..{num_classes + label_offset - 1} (num_classes="
        f"{num_classes}, label_offset={label_offset})",
    ])]):
        return tf.cast(tf.identity(label), tf.int32)



def locate_bad_record(files, image_key=IMAGE_KEY, label_key=LABEL_KEY):
    """Finds the first record of `files` that cannot be read, parsed or decoded.

    Called after a pipeline failed, to name the file and the record in the
    error instead of showing a stack trace from inside tf.data.

    Args:
        files: shard paths, searched in order.
        image_key: feature holding the JPEG bytes.
        label_key: feature holding the label.

    Returns:
        A `ShardError` naming the file and the record, or None when every
        record reads, parses and decodes.
    """
    def checked(index, record):
        jpeg, _ = parse_record(record, image_key, label_key)
        return index, tf.shape(tf.io.decode_jpeg(jpeg, channels=3))

    for path in files:
        raw = tf.data.TFRecordDataset(path)
        readable, read_error = _readable_records(raw)
        if read_error is not None:
            return ShardError(
                f"Shard {path} is corrupt: record {readable} cannot be read "
                f"({read_error.message.splitlines()[0]})."
            )
        # Records that fail the check are dropped: the first gap is the bad one.
        passing = raw.enumerate().map(checked).ignore_errors().map(lambda i, _: i)
        expected = 0
        for index in passing.as_numpy_iterator():
            if index != expected:
                break
            expected += 1
        if expected < readable:
            return ShardError(
                f"Record {expected} of shard {path} is not an ImageNet example: it "
                f"needs a JPEG `{image_key}` and an int64 `{label_key}`."
            )
    return None


def _readable_records(records, chunk=256):
    """`(count, error)`: how many records read before the first read error."""
    count = 0
    try:
        for batch in records.batch(chunk):
            count += len(batch)
        return count, None
    except tf.errors.OpError:
        pass
    try:  # the failing chunk, one record at a time
        for _ in records.skip(count):
            count += 1
    except tf.errors.OpError as error:
        return count, error
    return count, None
