"""`keras-relnet train-imagenet` and `keras-relnet evaluate`."""

import json


def add_data_arguments(parser):
    """The arguments that say where the data is and how to read it."""
    from keras_relnet.data.shards import LAYOUTS

    parser.add_argument("--data-dir", required=True,
                        help="directory of ImageNet TFRecord shards (or a TFDS data dir)")
    parser.add_argument("--layout", default="tfrecord", choices=sorted(LAYOUTS),
                        help="tfrecord: train-*/validation-* shards; tfds: prepared imagenet2012")
    parser.add_argument("--label-offset", type=int,
                        help="subtracted from stored labels (default: 1 for tfrecord "
                             "labels 1..1000, 0 for tfds)")
    parser.add_argument("--classes", type=int, default=1000, help="classifier size")
    parser.add_argument("--image-size", type=int, default=224,
                        help="height and width of the model's input")
    parser.add_argument("--batch-size", type=int, default=256, help="global batch size")


def add_train_arguments(parser):
    """Adds the `train-imagenet` arguments to an argparse parser."""
    from keras_relnet.applications.registry import MODELS
    from keras_relnet.training.imagenet import PRECISIONS
    from keras_relnet.training.strategies import STRATEGIES

    parser.add_argument("--model", required=True, choices=sorted(MODELS),
                        help="the package model to train")
    parser.add_argument("--width-multiplier", type=float,
                        help="LR-Net width multiplier (default: the model's)")
    add_data_arguments(parser)
    parser.add_argument("--model-dir", required=True,
                        help="checkpoints, logs and the resume backup; rerun to resume")
    parser.add_argument("--epochs", type=int, default=100, help="epochs of the schedule")
    parser.add_argument("--steps-per-epoch", type=int,
                        help="default: training examples // batch size")
    parser.add_argument("--train-examples", type=int,
                        help="records per epoch (default: counted; known for 1024 shards)")
    parser.add_argument("--learning-rate", type=float, default=0.1,
                        help="learning rate per 256 images, scaled linearly (default 0.1)")
    parser.add_argument("--warmup-epochs", type=float,
                        help="epochs of linear warm-up (default: 5, at most --epochs)")
    parser.add_argument("--weight-decay", type=float, default=1e-4,
                        help="L2 of the kernels, through the momentum")
    parser.add_argument("--label-smoothing", type=float, default=0.1,
                        help="of the cross-entropy")
    parser.add_argument("--nesterov", action="store_true", help="Nesterov momentum")
    parser.add_argument("--strategy", default="auto", choices=STRATEGIES,
                        help="tf.distribute strategy (auto: mirrored over the local GPUs, "
                             "else one device)")
    parser.add_argument("--devices", help="comma-separated devices for --strategy mirrored")
    parser.add_argument("--tpu", help="TPU name or address for --strategy tpu")
    parser.add_argument("--mixed-precision", choices=sorted(p for p in PRECISIONS if p),
                        help="mixed_float16 or mixed_bfloat16 policy (default: float32)")
    parser.add_argument("--jit-compile", choices=["auto", "true", "false"], default="auto",
                        help="XLA-compile the train step (auto: the model decides)")
    parser.add_argument("--randaugment", type=float, metavar="MAGNITUDE",
                        help="RandAugment magnitude 0..10 (default: off)")
    parser.add_argument("--mixup", type=float, default=0.0, help="mixup alpha (default: off)")
    parser.add_argument("--cutmix", type=float, default=0.0, help="cutmix alpha (default: off)")
    parser.add_argument("--cache", action="store_true", help="keep training records in RAM")
    parser.add_argument("--shuffle-buffer", type=int, default=10_000,
                        help="records in tf.data's shuffle buffer")
    parser.add_argument("--nondeterministic", action="store_true",
                        help="let tf.data reorder elements (faster; resume not exact)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the weights, the shuffling and the augmentations")
    parser.add_argument("--backup-every", type=int, default=1000,
                        help="steps between resume backups (default 1000)")
    parser.add_argument("--no-validation", action="store_true",
                        help="skip the validation pass after each epoch")


def add_evaluate_arguments(parser):
    """Adds the `evaluate` arguments to an argparse parser."""
    from keras_relnet.applications.registry import MODELS

    parser.add_argument("--model", required=True,
                        help=f"a .keras file or a package model ({', '.join(sorted(MODELS))})")
    parser.add_argument("--weights", help="weights file for a package model")
    parser.add_argument("--width-multiplier", type=float,
                        help="LR-Net width multiplier of a package model")
    add_data_arguments(parser)


def run_train(args):
    """Trains (or resumes) and prints the last epoch's metrics as JSON."""
    from keras_relnet.training.imagenet import train_imagenet
    from keras_relnet.training.recipe import Recipe
    from keras_relnet.training.strategies import make_strategy

    data = _data(args, train_examples=args.train_examples, seed=args.seed,
                 shuffle_buffer=args.shuffle_buffer, cache=args.cache,
                 deterministic=not args.nondeterministic,
                 randaugment_magnitude=args.randaugment, mixup_alpha=args.mixup,
                 cutmix_alpha=args.cutmix)
    recipe = Recipe(epochs=args.epochs, global_batch_size=args.batch_size,
                    base_learning_rate=args.learning_rate,
                    warmup_epochs=(min(5, args.epochs) if args.warmup_epochs is None
                                   else args.warmup_epochs),
                    nesterov=args.nesterov, weight_decay=args.weight_decay,
                    label_smoothing=args.label_smoothing)
    devices = args.devices.split(",") if args.devices else None
    strategy = make_strategy(args.strategy, devices=devices, tpu=args.tpu)
    _, history = train_imagenet(
        args.model, data, recipe, model_dir=args.model_dir, strategy=strategy,
        mixed_precision=args.mixed_precision, steps_per_epoch=args.steps_per_epoch,
        validation=not args.no_validation, backup_every_steps=args.backup_every,
        jit_compile={"auto": "auto", "true": True, "false": False}[args.jit_compile],
        verbose=2, width_multiplier=args.width_multiplier)
    if not history:  # nothing left to train: the backup is at the last epoch
        print(f"The run in {args.model_dir} has already trained all {args.epochs} epochs; "
              "nothing to do. Pass a larger --epochs to train on, or a new --model-dir.")
        return 0
    print(json.dumps({name: values[-1] for name, values in history.items()}))
    return 0


def run_evaluate(args):
    """Evaluates a model on the validation split and prints top-1/top-5 as JSON."""
    from keras_relnet.applications.registry import load_model
    from keras_relnet.training.imagenet import evaluate_imagenet
    from keras_relnet.training.strategies import make_strategy

    data = _data(args)
    with make_strategy("auto").scope():
        model = load_model(args.model, args.weights, args.classes, args.image_size,
                           width_multiplier=args.width_multiplier)
    print(json.dumps(evaluate_imagenet(model, data, args.batch_size, verbose=0)))
    return 0


def _data(args, **options):
    from keras_relnet.data.imagenet import ImageNet

    return ImageNet(args.data_dir, layout=args.layout, image_size=args.image_size,
                    num_classes=args.classes, label_offset=args.label_offset, **options)

