"""The `keras-relnet` command line: one subcommand per task.

    keras-relnet export --model lrnet26 --weights PATH --output model.tflite
    keras-relnet prepare-imagenet --source IMAGENET_DIR --output SHARD_DIR
    keras-relnet train-imagenet --model lrnet50 --data-dir SHARD_DIR --model-dir DIR
    keras-relnet evaluate --model best.keras --data-dir DIR
    keras-relnet build-kernels [--level native] [--force]
    keras-relnet track-eval --ground-truth gt.txt --hypotheses result.txt
"""

import argparse
import os
import sys


class DefaultsShown(argparse.HelpFormatter):
    """Help that ends with each option's default, unless the help says it
    already or there is none to say (None, off, a required option)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("default" in text or action.required
                or any(action.default is nothing for nothing in (None, False, argparse.SUPPRESS))):
            return text
        return f"{text} (default: {action.default})".strip()


DEFAULTS_SHOWN = DefaultsShown


def main(argv=None):
    """Parses `argv` (default: `sys.argv[1:]`) and runs the subcommand.

    Returns:
        The exit code.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from keras_relnet.data import command as data_command
    from keras_relnet.export import command as export_command
    from keras_relnet.ops.local_relation import kernel_command
    from keras_relnet.tracking import command as tracking_command
    from keras_relnet.training import command as training_command

    parser = argparse.ArgumentParser(prog="keras-relnet", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    export_parser = commands.add_parser(
        "export", help="export a model to SavedModel, TFLite or ONNX",
        formatter_class=DEFAULTS_SHOWN)
    export_command.add_arguments(export_parser)
    export_parser.set_defaults(run=export_command.run)
    prepare_parser = commands.add_parser(
        "prepare-imagenet", help="write TFRecord shards from ImageNet or image folders",
        formatter_class=DEFAULTS_SHOWN)
    data_command.add_prepare_arguments(prepare_parser)
    prepare_parser.set_defaults(run=data_command.run_prepare)
    train_parser = commands.add_parser(
        "train-imagenet", help="train a model on ImageNet shards with model.fit (resumable)",
        formatter_class=DEFAULTS_SHOWN)
    training_command.add_train_arguments(train_parser)
    train_parser.set_defaults(run=training_command.run_train)
    evaluate_parser = commands.add_parser(
        "evaluate", help="top-1/top-5 of a model on the ImageNet validation shards",
        formatter_class=DEFAULTS_SHOWN)
    training_command.add_evaluate_arguments(evaluate_parser)
    evaluate_parser.set_defaults(run=training_command.run_evaluate)
    kernels_parser = commands.add_parser(
        "build-kernels", help="compile the local relation kernel for this machine (cached)",
        formatter_class=DEFAULTS_SHOWN)
    kernel_command.add_arguments(kernels_parser)
    kernels_parser.set_defaults(run=kernel_command.run)
    track_parser = commands.add_parser(
        "track-eval", help="MOTA, IDF1, ID switches and MOTP of MOTChallenge tracking files",
        formatter_class=DEFAULTS_SHOWN)
    tracking_command.add_arguments(track_parser)
    track_parser.set_defaults(run=tracking_command.run)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except ValueError as error:  # bad arguments: the message, not a traceback
        parser.exit(2, f"keras-relnet {args.command}: error: {error}\n")


if __name__ == "__main__":
    sys.exit(main())
