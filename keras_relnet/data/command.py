"""`keras-relnet prepare-imagenet`: image folders to TFRecord shards."""


def add_prepare_arguments(parser):
    """Adds the `prepare-imagenet` arguments to an argparse parser."""
    parser.add_argument("--source", required=True,
                        help="ImageNet root (train/<wnid>/, val/) or a root of <class>/ folders")
    parser.add_argument("--output", required=True, help="directory for the shards")
    parser.add_argument("--validation-labels",
                        help="ground truth of a flat val/ folder: one wnid per line, "
                             "'<file> <wnid>' lines, LOC_val_solution.csv, or "
                             "ILSVRC2012_validation_ground_truth.txt (with --devkit-meta)")
    parser.add_argument("--devkit-meta", help="the devkit's meta.mat (ILSVRC2012_ID -> wnid)")
    parser.add_argument("--train-shards", type=int, default=1024)
    parser.add_argument("--validation-shards", type=int, default=128)
    parser.add_argument("--split", default="train", choices=["train", "validation"],
                        help="the split a root of <class>/ folders is written as")
    parser.add_argument("--workers", type=int, help="shards written at once (default: CPUs)")


def run_prepare(args):
    """Writes the shards and prints one line per split.

    Returns:
        The process exit code (0).
    """
    from keras_relnet.data.folders import prepare_imagenet

    reports = prepare_imagenet(
        args.source, args.output, train_shards=args.train_shards,
        validation_shards=args.validation_shards, validation_labels=args.validation_labels,
        devkit_meta=args.devkit_meta, split=args.split, workers=args.workers)
    for report in reports:
        print(f"{report.split}: {report.written} records, {len(report.converted)} re-encoded "
              f"as RGB JPEG, {len(report.skipped)} skipped (see {args.output}/report-"
              f"{report.split}.txt)")
    return 0
