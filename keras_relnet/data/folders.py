"""Image folders to ImageNet-format TFRecord shards (`keras-relnet prepare-imagenet`).

Layouts read:

- ImageNet as distributed: `source/train/<wnid>/*.JPEG`, and the validation
  images either in class folders (`source/val/<wnid>/*`) or flat
  (`source/val/*.JPEG`) with a ground-truth file: one wnid per line or
  `<file> <wnid>` pairs (as TF's `imagenet_2012_validation_synset_labels.txt`),
  Kaggle's `LOC_val_solution.csv`, or the devkit's
  `ILSVRC2012_validation_ground_truth.txt` (one ILSVRC2012_ID per line) with
  the devkit's `meta.mat`;
- any image-folder dataset `root/<class>/*`, written as one split.

Classes are numbered in the sorted order of the training folders (wnids for
ImageNet, so the standard 0..999) and stored 1-based, as the TPU conversion
does, which the "tfrecord" layout's default `label_offset=1` expects;
`labels.txt` lists the class names in that order. A JPEG with three channels
is stored as it is; PNG files, CMYK and greyscale JPEGs (all of which occur in
ImageNet) are re-encoded as RGB JPEG; files that do not decode are skipped.
Both are listed in `report-<split>.txt`. Shards are written in parallel, each
to a hidden temporary name renamed when complete (its bookkeeping lives in
`.prepare/`), so an interrupted run resumes where it stopped and a finished
one is not redone.
"""

import concurrent.futures
import csv
import io
import json
import os
import pathlib
from typing import NamedTuple

import numpy as np

from keras_relnet.data.shards import image_example
from keras_relnet.ops import checks

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_SHARD_SEED = 0
_BOOKKEEPING = ".prepare"  # hidden: shard globs (train-*) never see it


class SplitReport(NamedTuple):
    """What `write_split` did: written records, re-encoded and skipped files."""

    split: str
    written: int
    converted: list
    skipped: list


def prepare_imagenet(source, output, train_shards=1024, validation_shards=128,
                     validation_labels=None, devkit_meta=None, split="train", workers=None,
                     progress=True):
    """Writes the shards of an ImageNet tree or of any `root/<class>/*` folder.

    Args:
        source: the ImageNet root (holding `train/` and `val/` or
            `validation/`) or an image-folder root of class folders.
        output: directory for the shards (created).
        train_shards, validation_shards: shard counts (ImageNet's usual
            1024 and 128).
        validation_labels: ground-truth file of a flat validation folder
            (see the module docstring).
        devkit_meta: the devkit's `meta.mat`, for an ILSVRC2012_ID
            ground-truth file.
        split: the split an image-folder root (no `train/`) is written as.
        workers: shards written at once (default: the CPU count).
        progress: show a Keras progress bar per split.

    Returns:
        A list of `SplitReport`, one per split written.

    Raises:
        ValueError: for a source in neither layout, a flat validation folder
            without ground truth, labels that do not match the classes, an
            `output` that is a file, or shard and worker counts below 1.
    """
    source, output = pathlib.Path(source), pathlib.Path(output)
    checks.check_positive_int("train_shards", train_shards)
    checks.check_positive_int("validation_shards", validation_shards)
    if workers is not None:
        checks.check_positive_int("workers", workers)
    if not source.is_dir():
        raise ValueError(f"`source` {source} is not a directory.")
    if output.exists() and not output.is_dir():
        raise ValueError(f"`output` {output} is a file; it must be a directory for the "
                         "shards (new or existing).")
    train_dir = source / "train"
    if not train_dir.is_dir():
        classes = class_folders(source)
        if not classes:
            raise ValueError(
                f"`source` {source} holds neither train/<class>/ folders (ImageNet) nor "
                "<class>/ folders of images.")
        items = folder_items(source, classes)
        _write_labels(output, classes)
        shards = train_shards if split == "train" else validation_shards
        return [write_split(items, output, split, shards, workers, progress)]
    classes = class_folders(train_dir)
    if not classes:
        raise ValueError(f"`source` {source}/train holds no class folders of images.")
    _write_labels(output, classes)
    reports = [write_split(folder_items(train_dir, classes), output, "train", train_shards,
                           workers, progress)]
    validation_dir = next((source / name for name in ("val", "validation")
                           if (source / name).is_dir()), None)
    if validation_dir is not None:
        items = validation_items(validation_dir, classes, validation_labels, devkit_meta)
        reports.append(write_split(items, output, "validation", validation_shards, workers,
                                   progress))
    return reports


def class_folders(root):
    """The sorted names of the sub-folders of `root` that hold image files."""
    root = pathlib.Path(root)
    return sorted(entry.name for entry in root.iterdir()
                  if entry.is_dir() and any(_is_image(path) for path in entry.iterdir()))


def folder_items(root, classes):
    """`[(path, label)]` of every image in `root/<class>/`, label = index in `classes`."""
    root = pathlib.Path(root)
    return [(path, label) for label, name in enumerate(classes)
            for path in sorted((root / name).iterdir()) if _is_image(path)]


def validation_items(directory, classes, labels_file=None, devkit_meta=None):
    """`[(path, label)]` of the validation images: class folders, or a flat
    folder with its ground-truth file."""
    directory = pathlib.Path(directory)
    index = {name: label for label, name in enumerate(classes)}
    folders = class_folders(directory)
    if folders:
        unknown = sorted(set(folders) - set(index))
        if unknown:
            raise ValueError(f"The validation folders {unknown[:5]} are not training classes.")
        return [(path, index[name]) for name in folders
                for path in sorted((directory / name).iterdir()) if _is_image(path)]
    images = sorted(path for path in directory.iterdir() if _is_image(path))
    if labels_file is None:
        raise ValueError(
            f"The validation folder {directory} is flat: pass its ground truth "
            "(--validation-labels: one wnid per line, '<file> <wnid>' lines, "
            "LOC_val_solution.csv, or ILSVRC2012_validation_ground_truth.txt with "
            "--devkit-meta meta.mat).")
    names = ground_truth(labels_file, [path.name for path in images], devkit_meta)
    unknown = sorted(set(names.values()) - set(index))
    if unknown:
        raise ValueError(f"The validation ground truth names classes {unknown[:5]} that are "
                         "not training folders.")
    missing = [path.name for path in images if path.name not in names]
    if missing:
        raise ValueError(f"The validation ground truth has no label for {missing[:5]} "
                         f"({len(missing)} images).")
    return [(path, index[names[path.name]]) for path in images]


def ground_truth(labels_file, image_names, devkit_meta=None):
    """`{image file name: class name}` from a validation ground-truth file.

    Args:
        labels_file: one class per line (in the sorted order of
            `image_names`), `<file> <class>` lines, a `LOC_val_solution.csv`,
            or integer ILSVRC2012_IDs per line (needs `devkit_meta`).
        image_names: the validation files, sorted.
        devkit_meta: the devkit's `meta.mat` (synsets with ILSVRC2012_ID and
            WNID), for integer labels.

    Returns:
        The mapping.

    Example:
    >>> import tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "labels.txt"
    >>> _ = path.write_text("n02\\nn01\\n")
    >>> ground_truth(path, ["a.JPEG", "b.JPEG"])
    {'a.JPEG': 'n02', 'b.JPEG': 'n01'}
    """
    labels_file = pathlib.Path(labels_file)
    text = labels_file.read_text()
    if labels_file.suffix.lower() == ".csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        stems = {pathlib.Path(name).stem: name for name in image_names}
        return {stems.get(row["ImageId"], row["ImageId"]): row["PredictionString"].split()[0]
                for row in rows}
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if all(len(line) == 2 for line in lines):
        return {pathlib.Path(name).name: label for name, label in lines}
    values = [line[0] for line in lines]
    if len(values) != len(image_names):
        raise ValueError(f"`validation_labels` {labels_file} has {len(values)} labels for "
                         f"{len(image_names)} validation images.")
    if all(value.isdigit() for value in values):
        if devkit_meta is None:
            raise ValueError(f"`validation_labels` {labels_file} holds ILSVRC2012_IDs: pass "
                             "the devkit's meta.mat (--devkit-meta) to map them to wnids.")
        wnids = devkit_wnids(devkit_meta)
        values = [wnids[int(value)] for value in values]
    return dict(zip(image_names, values))


def devkit_wnids(meta_path):
    """`{ILSVRC2012_ID: wnid}` from the devkit's `meta.mat`."""
    from scipy.io import loadmat

    synsets = loadmat(str(meta_path), squeeze_me=True)["synsets"]
    return {int(synset["ILSVRC2012_ID"]): str(synset["WNID"]) for synset in synsets}


def write_split(items, output, split, num_shards, workers=None, progress=True):
    """Writes `items` `[(path, label)]` as `num_shards` shards of `split`.

    Items are spread over the shards in a fixed pseudo-random order (classes
    mix within a shard). A shard already written by an earlier run (same
    items, same shard count, as recorded in `.prepare/`) is kept.

    Returns:
        A `SplitReport`.
    """
    if not items:
        raise ValueError(f"No images for the {split} split.")
    output = pathlib.Path(output)
    (output / _BOOKKEEPING).mkdir(parents=True, exist_ok=True)
    num_shards = max(1, min(int(num_shards), len(items)))
    order = np.random.default_rng(_SHARD_SEED).permutation(len(items))
    items = [items[index] for index in order]
    _check_manifest(output, split, items, num_shards)
    names = [f"{split}-{index:05d}-of-{num_shards:05d}" for index in range(num_shards)]
    pending = [index for index, name in enumerate(names) if not (output / name).exists()]
    bar = _progress_bar(len(names), progress, done=len(names) - len(pending))
    results = {}
    with concurrent.futures.ThreadPoolExecutor(workers or os.cpu_count()) as pool:
        futures = {pool.submit(_write_shard, output / names[index], items[index::num_shards]):
                   index for index in pending}
        for future in concurrent.futures.as_completed(futures):
            results[futures[future]] = future.result()
            if bar is not None:
                bar.add(1)
    report = _merged_report(output, split, names, results)
    (output / f"report-{split}.txt").write_text(
        f"{report.written} records in {num_shards} shards\n"
        + "".join(f"re-encoded as RGB JPEG ({why}): {path}\n" for path, why in report.converted)
        + "".join(f"skipped ({why}): {path}\n" for path, why in report.skipped))
    return report


def encoded_image(path):
    """`(jpeg_bytes, why_converted)` of an image file: a three-channel JPEG as
    it is (why None), anything else decodable re-encoded as RGB JPEG.

    Raises:
        ValueError: when the file does not decode as an image.
    """
    import tensorflow as tf
    from PIL import Image

    data = pathlib.Path(path).read_bytes()
    try:
        if tf.io.is_jpeg(data).numpy():
            channels = int(tf.io.extract_jpeg_shape(data)[-1])
            tf.io.decode_jpeg(data)  # a truncated JPEG fails here
            if channels == 3:
                return data, None
            why = {1: "greyscale JPEG", 4: "CMYK JPEG"}.get(channels, f"{channels}-channel JPEG")
        else:
            why = f"{Image.open(io.BytesIO(data)).format or 'unknown'} file"
        buffer = io.BytesIO()
        Image.open(io.BytesIO(data)).convert("RGB").save(buffer, "JPEG", quality=95)
        return buffer.getvalue(), why
    except (tf.errors.OpError, OSError, ValueError) as error:
        raise ValueError(f"not a decodable image: {str(error).splitlines()[0]}") from None


def _write_shard(path, items):
    import tensorflow as tf

    converted, skipped, written = [], [], 0
    partial = path.with_name(f".{path.name}.partial")
    with tf.io.TFRecordWriter(str(partial)) as writer:
        for image_path, label in items:
            try:
                data, why = encoded_image(image_path)
            except ValueError as error:
                skipped.append((str(image_path), str(error)))
                continue
            if why is not None:
                converted.append((str(image_path), why))
            writer.write(image_example(data, label + 1))
            written += 1
    (path.parent / _BOOKKEEPING / f"{path.name}.json").write_text(
        json.dumps({"written": written, "converted": converted, "skipped": skipped}))
    os.replace(partial, path)
    return written, converted, skipped


def _merged_report(output, split, names, results):
    """The split's report: this run's shards, and the saved reports of earlier ones."""
    written, converted, skipped = 0, [], []
    for index, name in enumerate(names):
        if index in results:
            count, shard_converted, shard_skipped = results[index]
        else:
            saved = json.loads((output / _BOOKKEEPING / f"{name}.json").read_text())
            count, shard_converted, shard_skipped = (saved["written"], saved["converted"],
                                                     saved["skipped"])
        written += count
        converted += [tuple(entry) for entry in shard_converted]
        skipped += [tuple(entry) for entry in shard_skipped]
    return SplitReport(split, written, sorted(converted), sorted(skipped))


def _check_manifest(output, split, items, num_shards):
    """Records which items the shards hold; a rerun must ask for the same."""
    manifest = output / _BOOKKEEPING / f"{split}.json"
    content = {"num_shards": num_shards, "items": len(items),
               "first": str(items[0][0]), "last": str(items[-1][0])}
    if manifest.exists() and json.loads(manifest.read_text()) != content:
        raise ValueError(
            f"{output} holds {split} shards of another preparation (other images or shard "
            "count); use an empty `output` directory.")
    manifest.write_text(json.dumps(content))


def _write_labels(output, classes):
    output.mkdir(parents=True, exist_ok=True)
    (output / "labels.txt").write_text("".join(f"{name}\n" for name in classes))


def _progress_bar(total, progress, done):
    if not progress:
        return None
    import keras

    bar = keras.utils.Progbar(total, unit_name="shard")
    bar.update(done)
    return bar


def _is_image(path):
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
