"""`keras-relnet prepare-imagenet`: ImageNet-style and plain image folders to
shards that the input pipeline reads, with PNG/CMYK/greyscale files re-encoded,
corrupt ones reported, and interrupted runs resumed."""

import io
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from scipy.io import savemat

from keras_relnet.cli import main
from keras_relnet.data import ImageNet, count_records, find_shards
from keras_relnet.data.shards import parse_record
from tests.sample_photos import sample_photos

WNIDS = ("n01440764", "n01443537", "n01484850")


def jpeg(array, mode="RGB", format="JPEG"):
    buffer = io.BytesIO()
    Image.fromarray(array.astype("uint8")).convert(mode).save(buffer, format)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def imagenet_tree(tmp_path_factory):
    """train/<wnid>/*.JPEG (with a PNG, a CMYK, a greyscale and a corrupt file
    among them) and a flat val/ of 6 images; `labels` is the true wnid of each."""
    root = tmp_path_factory.mktemp("imagenet")
    photos = sample_photos(24, 18)
    for index, photo in enumerate(photos[:12]):
        folder = root / "train" / WNIDS[index % 3]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{WNIDS[index % 3]}_{index}.JPEG").write_bytes(jpeg(photo))
    (root / "train" / WNIDS[0] / "png_inside.JPEG").write_bytes(jpeg(photos[12], format="PNG"))
    (root / "train" / WNIDS[1] / "cmyk.JPEG").write_bytes(jpeg(photos[13], mode="CMYK"))
    (root / "train" / WNIDS[2] / "grey.JPEG").write_bytes(jpeg(photos[14], mode="L"))
    (root / "train" / WNIDS[2] / "broken.JPEG").write_bytes(jpeg(photos[15])[:200])
    (root / "train" / WNIDS[2] / "notes.txt").write_text("not an image")
    (root / "val").mkdir()
    labels = [WNIDS[index % 3] for index in range(6)]
    for index in range(6):
        name = f"ILSVRC2012_val_{index + 1:08d}.JPEG"
        (root / "val" / name).write_bytes(jpeg(photos[index]))
    (root / "synset_labels.txt").write_text("".join(f"{wnid}\n" for wnid in labels))
    return root, labels


def records(files):
    """`[(label, image shape)]` of every record, in file order."""
    out = []
    for record in tf.data.TFRecordDataset(files):
        image, label = parse_record(record)
        out.append((int(label), tuple(tf.io.decode_jpeg(image).shape)))
    return out


def test_imagenet_folders_become_shards_the_pipeline_reads(imagenet_tree, tmp_path, capsys):
    root, labels = imagenet_tree
    output = tmp_path / "shards"
    assert main(["prepare-imagenet", "--source", str(root), "--output", str(output),
                 "--validation-labels", str(root / "synset_labels.txt"),
                 "--train-shards", "3", "--validation-shards", "2", "--workers", "2"]) == 0
    printed = capsys.readouterr().out
    assert "train: 15 records, 3 re-encoded as RGB JPEG, 1 skipped" in printed
    assert "validation: 6 records" in printed
    report = (output / "report-train.txt").read_text()
    for entry in ("(PNG file): ", "(CMYK JPEG): ", "(greyscale JPEG): ", "broken.JPEG"):
        assert entry in report
    assert (output / "labels.txt").read_text().split() == list(WNIDS)
    train = records(find_shards(output, "train"))
    assert len(train) == 15 and all(shape[-1] == 3 for _, shape in train)
    assert sorted(label for label, _ in train) == sorted([1, 2, 3] * 4 + [1, 2, 3])
    validation = records(find_shards(output, "validation"))
    assert sorted(label for label, _ in validation) == sorted(
        WNIDS.index(wnid) + 1 for wnid in labels)
    data = ImageNet(str(output), image_size=16, num_classes=3, shuffle_buffer=8)
    images, targets = next(iter(data.validation(batch_size=6)))
    classes = targets.numpy().argmax(-1) if targets.shape.rank == 2 else targets.numpy()
    assert images.shape == (6, 16, 16, 3)
    assert sorted(classes) == sorted(WNIDS.index(wnid) for wnid in labels)


def test_an_interrupted_run_resumes_and_a_finished_one_is_kept(imagenet_tree, tmp_path):
    from keras_relnet.data import prepare_imagenet

    root, _ = imagenet_tree
    options = dict(validation_labels=root / "synset_labels.txt", train_shards=3,
                   validation_shards=2, workers=2, progress=False)
    prepare_imagenet(root, tmp_path, **options)
    shards = find_shards(tmp_path, "train")
    before = {path: records([path]) for path in shards}
    os.remove(shards[1])  # as if the run had stopped while writing this shard
    (tmp_path / f".{os.path.basename(shards[1])}.partial").write_bytes(b"half a shard")
    stamps = {path: os.stat(path).st_mtime_ns for path in (shards[0], shards[2])}
    reports = prepare_imagenet(root, tmp_path, **options)
    assert {path: records([path]) for path in shards} == before
    assert {path: os.stat(path).st_mtime_ns for path in stamps} == stamps
    assert reports[0].written == 15 and len(reports[0].skipped) == 1
    assert not list(tmp_path.glob(".*.partial"))
    with pytest.raises(ValueError, match="holds train shards of another preparation"):
        prepare_imagenet(root, tmp_path, **{**options, "train_shards": 4})


def test_the_devkit_and_kaggle_ground_truth_give_the_same_labels(imagenet_tree, tmp_path):
    from keras_relnet.data import prepare_imagenet

    root, labels = imagenet_tree
    ids = {wnid: 100 + index for index, wnid in enumerate(reversed(WNIDS))}
    synsets = np.array([(ids[wnid], wnid) for wnid in WNIDS],
                       dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O")])
    savemat(tmp_path / "meta.mat", {"synsets": synsets})
    (tmp_path / "ground_truth.txt").write_text("".join(f"{ids[w]}\n" for w in labels))
    (tmp_path / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "".join(
        f"ILSVRC2012_val_{index + 1:08d},{wnid} 1 2 3 4\n" for index, wnid in enumerate(labels)))
    results = []
    for ground_truth, meta in [("ground_truth.txt", tmp_path / "meta.mat"),
                               ("LOC_val_solution.csv", None)]:
        output = tmp_path / f"shards_{len(results)}"
        prepare_imagenet(root, output, validation_labels=tmp_path / ground_truth,
                         devkit_meta=meta, train_shards=1, validation_shards=1, progress=False)
        results.append(sorted(label for label, _ in records(find_shards(output,
                                                                         "validation"))))
    assert results[0] == results[1] == sorted(WNIDS.index(w) + 1 for w in labels)
    with pytest.raises(ValueError, match="pass the devkit's meta.mat"):
        prepare_imagenet(root, tmp_path / "no_meta",
                         validation_labels=tmp_path / "ground_truth.txt", progress=False)


def test_any_class_folder_root_and_clear_errors(imagenet_tree, tmp_path, capsys):
    from keras_relnet.data import prepare_imagenet

    root, _ = imagenet_tree
    report, = prepare_imagenet(root / "train", tmp_path / "plain", train_shards=2,
                               progress=False)
    assert report.split == "train" and report.written == 15
    assert count_records(find_shards(tmp_path / "plain", "train")) == 15
    with pytest.raises(ValueError, match="is flat: pass its ground truth"):
        prepare_imagenet(root, tmp_path / "flat", progress=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["train-imagenet", "--model", "lrnet26", "--data-dir", str(root),
              "--model-dir", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    assert "keras-relnet prepare-imagenet --source" in capsys.readouterr().err


@pytest.mark.parametrize("options, message", [
    (["--train-shards", "0"], "`train_shards` must be a positive integer; received 0"),
    (["--workers", "0"], "`workers` must be a positive integer; received 0"),
    (["--validation-shards", "-1"], "`validation_shards` must be a positive integer"),
])
def test_prepare_imagenet_refuses_counts_below_one(options, message, tmp_path, capsys):
    (tmp_path / "source" / "cat").mkdir(parents=True)
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare-imagenet", "--source", str(tmp_path / "source"),
              "--output", str(tmp_path / "shards"), *options])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "shards").exists()


def test_prepare_imagenet_output_that_is_a_file_is_one_clear_error(tmp_path, capsys):
    (tmp_path / "source" / "cat").mkdir(parents=True)
    (tmp_path / "existing_file").write_text("keep me")
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare-imagenet", "--source", str(tmp_path / "source"),
              "--output", str(tmp_path / "existing_file")])
    assert exit_info.value.code == 2
    assert f"`output` {tmp_path / 'existing_file'} is a file" in capsys.readouterr().err
    assert (tmp_path / "existing_file").read_text() == "keep me"


def test_train_imagenet_on_a_root_of_class_folders_says_to_prepare_it(tmp_path, capsys):
    # A root of <class>/ folders, which prepare-imagenet accepts, once got only
    # "holds no train shards".
    (tmp_path / "flowers" / "rose").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "flowers" / "rose" / "a.jpg")
    with pytest.raises(SystemExit) as exit_info:
        main(["train-imagenet", "--model", "lrnet26", "--data-dir", str(tmp_path / "flowers"),
              "--model-dir", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    assert "keras-relnet prepare-imagenet --source" in capsys.readouterr().err
