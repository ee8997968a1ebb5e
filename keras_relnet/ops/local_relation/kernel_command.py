"""`keras-relnet build-kernels`: compile the local relation kernel for this
machine into the per-user cache, now rather than on first use."""

import sys

from keras_relnet.ops.local_relation import builder, kernel_cache


def add_arguments(parser):
    """Adds the `build-kernels` command's arguments to an argparse parser."""
    parser.add_argument("--level", help="CPU level to build: one of the levels this CPU runs "
                                        f"or {builder.NATIVE!r} (default: the best portable "
                                        "level of this CPU)")
    parser.add_argument("--force", action="store_true",
                        help="rebuild even if the cache already holds the library")


def run(args):
    """Builds (or finds) the library, then prints what `explain()` reports.

    Returns:
        0 when the library is there, 1 when it could not be built.
    """
    levels = builder.supported_levels()
    level = args.level or levels[0]
    if level not in (*levels, builder.NATIVE):
        raise ValueError(f"--level must be one of {[*levels, builder.NATIVE]} on this CPU, "
                         f"received {level!r}")
    if args.force:
        kernel_cache.remove_cached_library(level)
    path, problem = kernel_cache.build_into_cache(level, retry_failed=True)
    if path is None:
        print(f"keras-relnet build-kernels: the {level} kernel was not built: {problem}",
              file=sys.stderr)
        return 1
    print(f"{path}")
    from keras_relnet.ops.local_relation.dispatch import explain

    print(explain("auto"))
    return 0
