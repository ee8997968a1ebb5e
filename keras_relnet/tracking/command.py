"""`keras-relnet track-eval`: MOTA, IDF1, ID switches and MOTP of MOTChallenge files.

    keras-relnet track-eval --ground-truth gt.txt --hypotheses result.txt
    keras-relnet track-eval --ground-truth-dir MOT17/train --hypotheses-dir results/
"""

import pathlib

_SHOWN = (("mota", "MOTA", True), ("idf1", "IDF1", True), ("num_switches", "IDs", False),
          ("motp", "MOTP", True), ("precision", "Prec", True), ("recall", "Rcll", True),
          ("num_false_positives", "FP", False), ("num_misses", "FN", False))


def add_arguments(parser):
    """Adds the track-eval options to an argparse parser."""
    parser.add_argument("--ground-truth", action="append", default=[], metavar="FILE",
                        help="a ground-truth file (repeat, paired in order with --hypotheses)")
    parser.add_argument("--hypotheses", action="append", default=[], metavar="FILE",
                        help="a tracker output file in MOTChallenge format")
    parser.add_argument("--ground-truth-dir", metavar="DIR",
                        help="MOTChallenge layout: DIR/<sequence>/gt/gt.txt")
    parser.add_argument("--hypotheses-dir", metavar="DIR",
                        help="one <sequence>.txt per sequence of --ground-truth-dir")
    parser.add_argument("--iou-threshold", type=float, default=0.5,
                        help="the lowest IoU of a match (default 0.5)")
    parser.add_argument("--output", metavar="CSV", help="also write the metrics as CSV")


def sequence_files(args):
    """`(names, ground-truth paths, hypothesis paths)` from the arguments.

    Raises:
        ValueError: unpaired files, a missing file or an empty directory.
    """
    if len(args.ground_truth) != len(args.hypotheses):
        raise ValueError(f"--ground-truth and --hypotheses must be given the same number of "
                         f"times; received {len(args.ground_truth)} and {len(args.hypotheses)}.")
    truths = [pathlib.Path(path) for path in args.ground_truth]
    guesses = [pathlib.Path(path) for path in args.hypotheses]
    names = [sequence_name(path) for path in truths]
    if bool(args.ground_truth_dir) != bool(args.hypotheses_dir):
        raise ValueError("--ground-truth-dir and --hypotheses-dir go together.")
    if args.ground_truth_dir:
        root = pathlib.Path(args.ground_truth_dir)
        found = sorted(root.glob("*/gt/gt.txt"))
        if not found:
            raise ValueError(f"--ground-truth-dir {root} holds no <sequence>/gt/gt.txt.")
        for path in found:
            names.append(sequence_name(path))
            truths.append(path)
            guesses.append(pathlib.Path(args.hypotheses_dir) / f"{names[-1]}.txt")
    if not truths:
        raise ValueError("give --ground-truth and --hypotheses, or --ground-truth-dir and "
                         "--hypotheses-dir.")
    for path in truths + guesses:
        if not path.is_file():
            raise ValueError(f"no such file: {path}")
    return names, truths, guesses


def sequence_name(path):
    """`SEQ` for `SEQ/gt/gt.txt` or `SEQ/gt.txt`, else the file's stem.

    Example:
    >>> sequence_name(pathlib.Path("MOT17-02/gt/gt.txt")), sequence_name(pathlib.Path("a.txt"))
    ('MOT17-02', 'a')
    """
    path = path.resolve()  # "gt.txt" alone has an empty parent name
    if path.stem != "gt":
        return path.stem
    return path.parent.parent.name if path.parent.name == "gt" else path.parent.name


def run(args):
    """Evaluates and prints the table; returns the exit code."""
    from keras_relnet.tracking.evaluation import evaluate
    from keras_relnet.tracking.mot_format import check_unique_ids, read_mot

    names, truths, guesses = sequence_files(args)
    if args.output and not pathlib.Path(args.output).resolve().parent.is_dir():
        raise ValueError(f"--output {args.output}: the folder "
                         f"{pathlib.Path(args.output).parent} does not exist.")
    pairs = []
    for truth, guess in zip(truths, guesses):
        tables = read_mot(truth), read_mot(guess)
        for path, table in zip((truth, guess), tables):
            check_unique_ids(table, path)  # names the file, which evaluate cannot
        pairs.append(tables)
    metrics = evaluate(pairs, names, args.iou_threshold)
    print(format_metrics(metrics))
    if args.output:
        metrics.to_csv(args.output)
    return 0


def format_metrics(metrics):
    """The metrics table as text (fractions as percentages).

    Args:
        metrics: the `evaluation.evaluate` frame.

    Returns:
        A string: a header and one line per sequence.
    """
    width = max(len(str(name)) for name in metrics.index)
    lines = [f"{'sequence':<{width}}" + "".join(f"{label:>8}" for _, label, _ in _SHOWN)]
    for name, row in metrics.iterrows():
        cells = [f"{100 * row[key]:8.1f}" if percent else f"{int(row[key]):8d}"
                 for key, _, percent in _SHOWN]
        lines.append(f"{name:<{width}}" + "".join(cells))
    return "\n".join(lines)
